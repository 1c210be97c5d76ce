#!/usr/bin/env bash
# Every benchmark, one table each, with the time it took: bash benchmarks/run.sh [--quick]
# --quick uses smaller sizes (about a minute in all). The transfer and SLURM-call benchmarks need
# the testbed (scripts/testbed.sh); its env.sh is sourced here if it exists, else they skip.
# A benchmark that fails does not stop the others; the exit status says whether any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
testbed_env="${HPC_DIR:-/tmp/hpc-testbed}/env.sh"
if [[ -z "${HPC_SSH_HOST:-}" && -f $testbed_env ]]; then
  # shellcheck source=/dev/null
  source "$testbed_env"
fi
quick=false
[[ "${1:-}" == --quick ]] && quick=true
failed=()

bench() { # bench NAME [ARGS...]: run benchmarks/NAME.py as a module, timed
  local name=$1 start=$SECONDS
  shift
  echo "== $name $*"
  if "$python" -m "benchmarks.$name" "$@"; then
    echo "== $name: $((SECONDS - start)) s"
  else
    echo "== $name FAILED after $((SECONDS - start)) s"
    failed+=("$name")
  fi
  echo
}

if $quick; then
  bench bench_query --n 10000 --repeat 3
  bench bench_startup --repeat 5
  bench bench_transfer --mb 100 --repeat 3
  bench bench_tick --finished 10000 --repeat 3 --cron-repeat 2
  bench bench_calls --sizes 1,10 --repeat 2
  bench bench_polling --sizes 1,100 --repeat 2
  bench bench_throughput --jobs 10
  bench bench_pipelines --frames 20 --size 256 --repeat 3
  bench bench_splits --frames 400 --repeat 1
  bench bench_share --probes 100
else
  bench bench_query
  bench bench_startup
  bench bench_transfer
  bench bench_tick
  bench bench_calls
  bench bench_polling
  bench bench_throughput
  bench bench_pipelines
  bench bench_splits --frames 2000
  bench bench_share
fi
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi

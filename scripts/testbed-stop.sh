#!/bin/bash
# testbed-stop.sh - stop the daemons scripts/testbed.sh started, by their recorded PIDs only.
# A zombie counts as stopped (PID 1 here reaps slowly). Keys, SLURM state and logs stay in
# $HPC_DIR; env.sh is removed, since its presence means "the testbed is up".
set -uo pipefail
HPC_DIR=${HPC_DIR:-/tmp/hpc-testbed}
HPC_USER=${HPC_USER:-hpcuser}
# Cancel jobs first: a job's slurmstepd outlives slurmd and would report to the next testbed.
if [ -s "$HPC_DIR/pids/slurmctld.pid" ] && scancel --user="$HPC_USER" 2>/dev/null; then
  for _ in $(seq 100); do
    [ -z "$(squeue -h -u "$HPC_USER" -t running,completing)" ] && break
    sleep 0.1
  done
fi
for name in sshd-hpc crond slurmd slurmctld munged; do
  pidfile=$HPC_DIR/pids/$name.pid
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do ps -o stat= -p "$pid" | grep -qv '^Z' || break; sleep 0.1; done
    echo "[testbed] stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
rm -f "$HPC_DIR/env.sh"

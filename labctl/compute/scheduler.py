"""Schedulers: submit a job folder's batch script, ask about all active jobs at once, cancel.

`SlurmScheduler` drives sbatch/squeue/sacct/scancel through a `Runner` (locally or over SSH);
`ProcessScheduler` runs the same script as plain background processes on this machine, for a
lab without SLURM and for `labctl demo`. Both report scheduler-neutral `TaskStatus` records,
keyed `ID` or `ID_TASK`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from typing import Protocol

from labctl.clock import utcnow
from labctl.compute.batch import JobLayout
from labctl.compute.slurm import (
    SchedulerError,
    named_sacct_command,
    named_since,
    named_squeue_command,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    read_named,
    sacct_command,
    squeue_command,
    submit_limit,
)
from labctl.compute.transport import CommandError, Runner
from labctl.model.job import TaskStatus
from labctl.model.states import FailureReason, JobState


class Scheduler(Protocol):
    label: str
    """How people know it: "SLURM", "process"."""
    accounts: bool
    """Whether `poll` reports each finished task's usage (SLURM with slurmdbd)."""

    def prepare(self, layout: JobLayout) -> None:
        """Make the job's folder ready for a new attempt: its `logs` and `outputs` made, and
        nothing of an earlier attempt's in the way (SchedulerError while that still runs)."""

    def submit(self, layout: JobLayout, tasks: int) -> str:
        """Submit the job folder's script; return the scheduler's job id."""

    def find(self, name: str, layout: JobLayout, since: dt.datetime | None) -> str | None:
        """The id of the job named `name` already submitted for this folder by the submission
        attempt begun at `since`, if any (to adopt it rather than submit it again)."""

    def poll(
        self, jobs: Mapping[str, JobLayout], since: dt.datetime | None = None
    ) -> dict[str, TaskStatus]:
        """Status of all these jobs (and their array tasks), submitted since `since`, in one
        round trip; finished ones with their usage where the scheduler accounts for it."""

    def cancel(self, job_id: str, layout: JobLayout, name: str) -> None:
        """Stop the job `job_id` if it is labctl's job `name` in folder `layout` (gone already
        is fine); NotOursError, having stopped nothing, if it is something else."""


# What squeue says (exit status 1) when it lists none of the ids it was given; a list with at
# least one id it still remembers succeeds and leaves the others out (tests/captured/README.md).
_NONE_LISTED = "Invalid job id specified"


class SubmitLimitError(SchedulerError):
    """The scheduler refused a job for a per-user, QOS or association submit limit: try later."""

    def __init__(self, limit: str) -> None:
        super().__init__(f"the cluster's submit limit is reached ({limit})")
        self.limit = limit


class NotOursError(SchedulerError):
    """A job id names something that is not the labctl job to stop: it was left alone."""


# Makes job folder $1's `logs` and an empty `outputs` (an earlier attempt's outputs are not this
# attempt's results), and the folder (and the scratch root, if new) the member's alone whatever
# the umask.
_FRESH = (
    'umask 077 && rm -rf -- "$1/outputs" && mkdir -p -- "$1/logs" "$1/outputs" && chmod 700 -- "$1"'
)

# The ids `sbatch --parsable` and squeue give: a job, or one task of an array.
_SLURM_ID = re.compile(r"[0-9]+(_[0-9]+)?")
_PID = re.compile(r"[1-9][0-9]*")


class SlurmScheduler:
    label = "SLURM"

    def __init__(self, runner: Runner, *, jobcomp: bool = False) -> None:
        self.runner = runner
        self.jobcomp = jobcomp
        self.accounts = not jobcomp
        self.calls = 0

    def _run(self, argv: list[str]) -> str:
        self.calls += 1
        result = self.runner.run(argv, check=False, timeout=120)
        if result.returncode != 0:
            limit = submit_limit(result.stderr)
            if limit is not None:
                raise SubmitLimitError(limit)
            first = (result.stderr.strip().splitlines() or ["(no message)"])[0]
            raise SchedulerError(f"{argv[0]} failed: {first}")
        return result.stdout

    def prepare(self, layout: JobLayout) -> None:
        self.runner.run(["sh", "-c", _FRESH, "prepare", str(layout.root)])

    def submit(self, layout: JobLayout, tasks: int) -> str:
        return parse_sbatch(self._run(["sbatch", "--parsable", str(layout.script)]))

    def find(self, name: str, layout: JobLayout, since: dt.datetime | None) -> str | None:
        """squeue, while it remembers the job; else the accounting, as `poll` reads it (a short
        job that ended is purged from squeue `MinJobAge` after, 300 s by default)."""
        found = named_since(read_named(self._run(named_squeue_command(name)), name), since)
        if found is None:
            argv = named_sacct_command(name, since_seconds=_window(since), jobcomp=self.jobcomp)
            found = named_since(read_named(self._run(argv), name), since)
        return found

    def poll(
        self, jobs: Mapping[str, JobLayout], since: dt.datetime | None = None
    ) -> dict[str, TaskStatus]:
        """One squeue for all the jobs; then one sacct for those it shows finished (for their
        usage) or no longer shows (finished longer ago than it remembers)."""
        if not jobs:
            return {}
        try:
            listed = self._run(squeue_command(jobs))
        except SchedulerError as exc:
            if _NONE_LISTED not in str(exc):
                raise
            listed = ""  # squeue remembers none of them: all are for accounting
        statuses = parse_squeue(listed)
        going = {s.job_id for s in statuses.values() if not s.finished}
        ended = [job_id for job_id in jobs if job_id not in going]
        if not ended:
            return statuses
        seen = {status.job_id for status in statuses.values()}
        argv = sacct_command(ended, since_seconds=_window(since), jobcomp=self.jobcomp)
        for key, status in parse_sacct(self._run(argv)).items():
            # accounting's final word (with usage) replaces squeue's; for a job squeue still
            # shows, only for the tasks it shows (the jobcomp log names array tasks otherwise)
            if status.finished and (status.job_id not in seen or key in statuses):
                restarts = statuses[key].restarts if key in statuses else status.restarts
                statuses[key] = dataclasses.replace(status, restarts=restarts)
            elif status.job_id not in seen:
                statuses.setdefault(key, status)
        return statuses

    def cancel(self, job_id: str, layout: JobLayout, name: str) -> None:
        """scancel the job only if it has the name labctl gave it: given an id and `--name`,
        scancel cancels nothing unless both match (and still exits 0)."""
        if not _SLURM_ID.fullmatch(job_id):
            raise NotOursError(f"{job_id!r} is not a SLURM job id: left alone")
        self._run(["scancel", f"--name={name}", job_id])


def _window(since: dt.datetime | None) -> int:
    """How many seconds back to ask the accounting about jobs submitted at `since` (a day if
    that is unknown), with an hour to spare for the clocks and sacct's own reckoning."""
    return int(((utcnow() - since).total_seconds() if since else 86400) + 3600)


# A shell function the scripts below start with: whether process $1 is alive as labctl's
# launcher (`_LAUNCH`, given as $2) for folder $3: its id leading its own session and process
# group, its command line `sh -c $2 labctl-job $3 TASKS`. Returns 0 if so, 1 if it is gone (or a
# zombie), 2 if it is something else (and says what).
_LAUNCHER = r"""
launcher() {
  l_id=$1; l_launch=$2; l_dir=$3
  l_found=$(ps -o stat=,pgid=,sid= -p "$l_id" 2>/dev/null) || return 1
  set -- $l_found
  case $1 in Z*) return 1;; esac
  if [ "$2" != "$l_id" ] || [ "$3" != "$l_id" ]; then
    echo "process $l_id does not lead its own session"; return 2
  fi
  l_want=$(printf '%s\0' sh -c "$l_launch" labctl-job "$l_dir" | od -An -v -tx1 | tr -d ' \n')
  l_have=$(head -c $((${#l_want} / 2)) "/proc/$l_id/cmdline" 2>/dev/null | od -An -v -tx1 |
    tr -d ' \n')
  if [ "$l_have" != "$l_want" ]; then
    echo "process $l_id is not labctl's job in $l_dir"; return 2
  fi
}
"""

# One shell round trip for all process jobs ($1 is `_LAUNCH`): for each (id, folder) print
# id|task|state, for the launch that claimed the folder only (a folder without a claim was
# launched by a labctl before launches claimed their folder: its id is taken as it is). Whether
# the launcher lives is read BEFORE its exit files: it writes them all before it ends, so a dead
# launcher with a missing exit file was killed, never merely finishing. The last task's exit
# counts once the launcher has ended too: until then the job runs, and its folder is not removed
# under it.
_POLL = r"""
launch=$1; shift
for arg in "$@"; do
  id=${arg%%=*}; dir=${arg#*=}; tasks=$(cat "$dir/logs/tasks" 2>/dev/null || echo 1)
  if claim=$(cat "$dir/logs/launched" 2>/dev/null); then
    [ "$claim" = "$id" ] || continue
    if launcher "$id" "$launch" "$dir" >/dev/null; then alive=alive; else alive=gone; fi
  elif ps -o stat= -p "$id" 2>/dev/null | grep -qv '^Z'; then alive=alive; else alive=gone; fi
  i=0
  while [ "$i" -lt "$tasks" ]; do
    if [ -f "$dir/logs/task-$i.exit" ] && { [ "$alive" = gone ] || [ "$i" -lt $((tasks - 1)) ]; }
    then echo "$id|$i|exit=$(cat "$dir/logs/task-$i.exit")"
    else echo "$id|$i|$alive"; fi
    i=$((i + 1))
  done
done
"""

# Launches folder $1 at most once: claims it by linking a file holding its own pid to
# `logs/launched` (a link is made whole or not at all, and never over another); prints the pid
# that holds the claim and closes its output, so the caller hears back at once. Only the
# claimant goes on: it removes what an earlier attempt's launch left and runs the tasks one after
# the other, each with SLURM_ARRAY_TASK_ID set as SLURM would.
_LAUNCH = r"""
dir=$1; tasks=$2; cd "$dir" || exit 3
echo $$ > "logs/launched.$$" && ln "logs/launched.$$" logs/launched 2>/dev/null
rm -f "logs/launched.$$"
first=$(cat logs/launched) || exit 3
if [ "$first" = $$ ]; then rm -f logs/task-*; echo "$tasks" > logs/tasks || exit 3; fi
echo "$first"; exec >/dev/null 2>&1
[ "$first" = $$ ] || exit 0
i=0
while [ "$i" -lt "$tasks" ]; do
  SLURM_ARRAY_TASK_ID=$i bash job.sh > "logs/task-$i.out" 2>&1
  echo $? > "logs/task-$i.exit.tmp" && mv "logs/task-$i.exit.tmp" "logs/task-$i.exit"
  i=$((i + 1))
done
"""


# Stops process job $1 only if it is labctl's launcher for folder $3 (`launcher`), its id all
# digits (no leading 0); checked and killed in one round trip. Exit 0: stopped, or gone already;
# 3 (_REFUSED): something else, left alone.
_CANCEL = r"""
id=$1; launch=$2; dir=$3
case $id in ''|0*|*[!0-9]*) printf '%s is not a process id: left alone\n' "$id"; exit 3;; esac
said=$(launcher "$id" "$launch" "$dir")
case $? in 1) exit 0;; 2) echo "$said: left alone"; exit 3;; esac
kill -s TERM -- "-$id"
"""
_REFUSED = 3

# Readies folder $2 for a new attempt of its job: removes the claim of an earlier attempt's
# launch, unless that launch still runs (exit 3, saying so); then `_FRESH` (on $1, the folder).
_PREPARE = r"""
launch=$1; dir=$2; shift
if claim=$(cat "$dir/logs/launched" 2>/dev/null) && launcher "$claim" "$launch" "$dir" >/dev/null
then
  echo "process $claim of an earlier attempt still runs in $dir"; exit 3
fi
rm -f -- "$dir/logs/launched" || exit
"""


class ProcessScheduler:
    """Jobs as detached process groups on the runner's machine; the id is the group's pid."""

    label = "process"
    accounts = False

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.calls = 0

    def prepare(self, layout: JobLayout) -> None:
        script = _LAUNCHER + _PREPARE + _FRESH
        argv = ["sh", "-c", script, "prepare", _LAUNCH, str(layout.root)]
        result = self.runner.run(argv, check=False)
        if result.returncode == _REFUSED:
            raise SchedulerError(result.stdout.strip())
        if result.returncode != 0:
            raise CommandError(result)

    def submit(self, layout: JobLayout, tasks: int) -> str:
        """Launch the job's tasks, unless its folder was launched already: the pid of the
        launcher that claimed the folder either way (`_LAUNCH`)."""
        self.calls += 1
        launch = ["setsid", "sh", "-c", _LAUNCH, "labctl-job", str(layout.root), str(tasks)]
        spawn = 'nohup "$@" </dev/null 2>&1 &'
        result = self.runner.run(["sh", "-c", spawn, "sh", *launch], timeout=30)
        pid = result.stdout.strip()
        if not _PID.fullmatch(pid):
            raise SchedulerError(f"could not start the job: {pid or result.stderr.strip()}")
        return pid

    def find(self, name: str, layout: JobLayout, since: dt.datetime | None) -> str | None:
        """The launcher that claimed the job's folder (running or ended), if one did."""
        self.calls += 1
        claim = self.runner.run(["cat", "--", str(layout.logs / "launched")], check=False)
        pid = claim.stdout.strip()
        return pid if claim.returncode == 0 and _PID.fullmatch(pid) else None

    def poll(
        self, jobs: Mapping[str, JobLayout], since: dt.datetime | None = None
    ) -> dict[str, TaskStatus]:
        if not jobs:
            return {}
        self.calls += 1
        args = [f"{job_id}={layout.root}" for job_id, layout in jobs.items()]
        argv = ["sh", "-c", _LAUNCHER + _POLL, "poll", _LAUNCH, *args]
        out = self.runner.run(argv, timeout=60).stdout
        tasks: dict[str, list[tuple[int, str]]] = {}
        for line in out.splitlines():
            job_id, index, what = line.split("|", 2)
            tasks.setdefault(job_id, []).append((int(index), what))
        statuses: dict[str, TaskStatus] = {}
        for job_id, reports in tasks.items():
            for task, what in reports:
                status = _process_status(job_id, task if len(reports) > 1 else None, what)
                statuses[status.key] = status
        return statuses

    def cancel(self, job_id: str, layout: JobLayout, name: str) -> None:
        """Kill the job's process group, once the host has checked that it is the job's
        launcher (`_CANCEL`)."""
        self.calls += 1
        argv = ["sh", "-c", _LAUNCHER + _CANCEL, "cancel", job_id, _LAUNCH, str(layout.root)]
        result = self.runner.run(argv, check=False, timeout=30)
        said = (result.stdout.strip() or result.stderr.strip() or "(no message)").splitlines()[0]
        if result.returncode == _REFUSED:
            raise NotOursError(said)
        if result.returncode != 0:
            raise SchedulerError(f"could not stop process job {job_id}: {said}")


def _process_status(job_id: str, task: int | None, what: str) -> TaskStatus:
    """A process job's state from what `_POLL` saw: alive, gone without an exit file (killed),
    or its exit status."""
    if what == "alive":
        return TaskStatus(job_id, JobState.RUNNING, None, "alive", None, task)
    if what == "gone":
        return TaskStatus(job_id, JobState.CANCELLED, FailureReason.CANCELLED, "killed", None, task)
    code = int(what.removeprefix("exit="))
    if code == 0:
        return TaskStatus(job_id, JobState.RETRIEVING, None, "exited", 0, task)
    return TaskStatus(job_id, JobState.FAILED, FailureReason.EXIT_CODE, "exited", code, task)

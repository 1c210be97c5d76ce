"""SLURM command lines and the parsing of their output: pure text in, pure values out.

`to_job_state` is the one place that reads SLURM's own state names. Array tasks are reported one
by one, keyed `"138_2"`; a pending array that SLURM still shows as one record (`138_[0-3]`) is
expanded into its tasks. Exit codes are shell-style (the exit status, or 128 + the signal number)
and None until the job has finished. `sacct` also yields each finished task's `TaskUsage`
(`labctl.compute.sacct` reads its units).
"""

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from labctl.compute.sacct import SACCT_FORMAT, SacctRecord, read_sacct
from labctl.errors import LabctlError
from labctl.model.job import TaskStatus
from labctl.model.states import FailureReason, JobState

SQUEUE_FORMAT = "JobArrayID:|,State:|,exit_code:|,RestartCnt:"
"""`squeue --Format`: `|`-separated job id (`138`, `138_2`, `138_[0-3]`), state, wait status,
and how many times SLURM requeued it (`scontrol requeue`, a node failure)."""

SUBMIT_LIMITS = re.compile(r"\b((?:QOS|Assoc)(?:Max|Grp)\w*Submit\w*)")
"""What sbatch names when a per-user, QOS or association submit limit refuses a job
(`sbatch: error: QOSMaxSubmitJobPerUserLimit`, tests/captured/sbatch-*-limit.stderr)."""

_JOB_ID = re.compile(r"\d+(_\d+)?")
_REPORTED_ID = re.compile(r"(\d+)(?:_(\d+)|_\[([\d,\-]+)(?:%\d+)?\])?")
_TASK_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


class SchedulerError(LabctlError):
    """SLURM refused a request or answered with something we cannot read."""


_NOT_FINISHED = frozenset({JobState.PENDING, JobState.RUNNING})
_PENDING = (JobState.PENDING, None)
_RUNNING = (JobState.RUNNING, None)
_SLURM_STATES: dict[str, tuple[JobState, FailureReason | None]] = {
    "PENDING": _PENDING,
    "REQUEUED": _PENDING,
    "REQUEUE_HOLD": _PENDING,
    "REQUEUE_FED": _PENDING,
    "RESV_DEL_HOLD": _PENDING,
    "CONFIGURING": _RUNNING,
    "RUNNING": _RUNNING,
    "COMPLETING": _RUNNING,
    "SIGNALING": _RUNNING,
    "STAGE_OUT": _RUNNING,
    "RESIZING": _RUNNING,
    "SUSPENDED": _RUNNING,
    "STOPPED": _RUNNING,
    "COMPLETED": (JobState.RETRIEVING, None),
    "FAILED": (JobState.FAILED, FailureReason.EXIT_CODE),
    "SPECIAL_EXIT": (JobState.FAILED, FailureReason.EXIT_CODE),
    "TIMEOUT": (JobState.FAILED, FailureReason.TIMEOUT),
    "DEADLINE": (JobState.FAILED, FailureReason.TIMEOUT),
    "OUT_OF_MEMORY": (JobState.FAILED, FailureReason.OUT_OF_MEMORY),
    "NODE_FAIL": (JobState.FAILED, FailureReason.NODE_FAIL),
    "BOOT_FAIL": (JobState.FAILED, FailureReason.NODE_FAIL),
    "PREEMPTED": (JobState.FAILED, FailureReason.PREEMPTED),
    "REVOKED": (JobState.FAILED, FailureReason.SLURM),
    "CANCELLED": (JobState.CANCELLED, FailureReason.CANCELLED),
}


def to_job_state(slurm_state: str, exit_code: int | None) -> tuple[JobState, FailureReason | None]:
    """Map a SLURM job state (`RUNNING`, `CANCELLED by 0`, ...) to ours, with why it failed.

    A finished job maps to `retrieving`: its results still have to come home. A `FAILED` job
    without a non-zero exit code failed inside SLURM rather than in its own script.
    """
    words = slurm_state.split()
    if not words or words[0] not in _SLURM_STATES:
        raise SchedulerError(f"unknown SLURM job state {slurm_state!r}")
    state, reason = _SLURM_STATES[words[0]]
    if reason is FailureReason.EXIT_CODE and not exit_code:
        reason = FailureReason.SLURM
    return state, reason


def parse_sbatch(stdout: str) -> str:
    """The job id printed by `sbatch --parsable` (`138`, or `138;cluster` on a federation)."""
    job_id = stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SchedulerError(f"sbatch --parsable printed no job id: {stdout.strip()!r}")
    return job_id


def submit_limit(stderr: str) -> str | None:
    """The name of the submit limit that made sbatch refuse a job, if that is why it did."""
    match = SUBMIT_LIMITS.search(stderr)
    return match[1] if match else None


def squeue_command(job_ids: Iterable[str]) -> list[str]:
    """The one `squeue` call that reports all these jobs, finished ones included."""
    return [
        "squeue",
        "--noheader",
        "--states=all",
        _jobs_option(job_ids),
        f"--Format={SQUEUE_FORMAT}",
    ]


def sacct_command(
    job_ids: Iterable[str], *, since_seconds: int, jobcomp: bool = False
) -> list[str]:
    """The one `sacct` call that reports these jobs, with their steps, once they are finished:
    over the last `since_seconds` (from the oldest job's submission), times as epoch seconds.

    `jobcomp=True` reads the job completion log instead of slurmdbd (`sacct --completion`), for
    clusters without accounting. That log knows no arrays (a task shows under its own raw job
    id) and no steps, MaxRSS or TotalCPU.
    """
    source = ["--completion"] if jobcomp else []
    return [
        "env",
        "SLURM_TIME_FORMAT=%s",
        "sacct",
        *source,
        "--parsable2",
        "--noheader",
        f"--starttime=now-{max(60, since_seconds)}",
        f"--format={SACCT_FORMAT}",
        _jobs_option(job_ids),
    ]


# Runs squeue or sacct ("$@") over the cluster user's own jobs, naming the user on the first line:
# the jobcomp log ignores --user (and --name and --starttime), and root sees everyone's jobs.
_AS_ME = 'me=$(id -un) && echo "$me" && exec env SLURM_TIME_FORMAT=%s "$@" --user="$me"'

SUBMIT_SKEW = dt.timedelta(seconds=30)
"""How far the cluster's clock may lag this machine's when a job's submit time is compared
with the submission attempt labctl recorded (`named_since`)."""


@dataclass(frozen=True)
class Named:
    """A SLURM job found by its name: its job id (an array's own), and when it was submitted."""

    job_id: str
    submitted: dt.datetime | None


def named_squeue_command(name: str) -> list[str]:
    """The `squeue` call that lists the cluster user's jobs named `name` that SLURM still
    remembers (finished ones for `MinJobAge`), for `read_named`."""
    squeue = ["squeue", "--noheader", "--states=all", f"--name={name}", "--format=%F|%j|%u|%V"]
    return ["sh", "-c", _AS_ME, "find", *squeue]


def named_sacct_command(name: str, *, since_seconds: int, jobcomp: bool = False) -> list[str]:
    """The `sacct` call that lists the cluster user's jobs named `name` in the accounting
    (slurmdbd, or with `jobcomp` the job completion log) over the last `since_seconds`, for
    `read_named`: the source and window as `sacct_command` chooses them."""
    source = ["--completion"] if jobcomp else []
    sacct = [
        "sacct",
        *source,
        "--parsable2",
        "--noheader",
        "--allocations",
        f"--starttime=now-{max(60, since_seconds)}",
        f"--name={name}",
        "--format=JobID,JobName,User,Submit",
    ]
    return ["sh", "-c", _AS_ME, "find", *sacct]


def read_named(text: str, name: str) -> list[Named]:
    """The jobs named `name` of the user on the first line, from the output of
    `named_squeue_command` or `named_sacct_command` (`id|name|user|epoch` lines; the jobcomp log
    lists everyone's jobs and writes the user as `hpcuser(1001)`); an array's tasks (`138_2`,
    `138_[0-3]`) under the array's id."""
    me, *lines = text.splitlines() or [""]
    found: list[Named] = []
    for line in lines:
        if not line.strip():
            continue
        fields = line.split("|")
        match = _REPORTED_ID.fullmatch(fields[0])
        if len(fields) != 4 or match is None:
            raise SchedulerError(f"expected 'id|name|user|submit' from SLURM, got {line!r}")
        _, job_name, user, submit = fields
        if job_name != name or user.partition("(")[0] != me:
            continue
        when = dt.datetime.fromtimestamp(int(submit), dt.UTC) if submit.isdigit() else None
        found.append(Named(match[1], when))
    return found


def named_since(found: Iterable[Named], since: dt.datetime | None) -> str | None:
    """The job of the submission attempt made at `since`: of the jobs submitted since then (all
    if the time is unknown), the first (the array's own id where the jobcomp log lists each
    task under its raw id); None if there is none. An earlier attempt's job of the same name
    (before a person's retry) is older than the attempt, and not it."""
    earliest = None if since is None else since - SUBMIT_SKEW
    ids = {
        int(job.job_id)
        for job in found
        if earliest is None or job.submitted is None or job.submitted >= earliest
    }
    return str(min(ids)) if ids else None


def parse_squeue(text: str) -> dict[str, TaskStatus]:
    """Read the output of `squeue_command`, keyed by `TaskStatus.key`, with the restarts."""
    statuses: dict[str, TaskStatus] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 4 or not fields[3].isdigit():
            raise SchedulerError(
                f"expected 'id|state|exit code|restarts' from squeue, got {line!r}"
            )
        record = "|".join(fields[:3])
        for key, status in _parse_records(record, _exit_from_wait_status).items():
            statuses[key] = dataclasses.replace(status, restarts=int(fields[3]))
    return statuses


def parse_sacct(text: str) -> dict[str, TaskStatus]:
    """Read the output of `sacct_command`, keyed by `TaskStatus.key`; a finished task comes
    with its usage. A job that jobacct_gather killed for exceeding its --mem (OverMemoryKill,
    without cgroups) ends FAILED by signal 9 with MaxRSS above its request: out of memory."""
    statuses: dict[str, TaskStatus] = {}
    for record in read_sacct(text):
        line = f"{record.job_id}|{record.state}|{record.exit_code}"
        for key, status in _parse_records(line, _exit_from_pair).items():
            statuses[key] = _with_usage(status, record)
    return statuses


def _with_usage(status: TaskStatus, record: SacctRecord) -> TaskStatus:
    if status.state in _NOT_FINISHED:
        return status
    usage = record.usage(status.key, status.exit_code)
    reason = status.reason
    rss, asked = usage.max_rss_bytes, usage.req_mem_bytes
    if status.exit_code == 128 + 9 and rss and asked and rss > asked:
        reason = FailureReason.OUT_OF_MEMORY
    return TaskStatus(
        status.job_id,
        status.state,
        reason,
        status.detail,
        status.exit_code,
        status.array_task,
        usage,
    )


def _jobs_option(job_ids: Iterable[str]) -> str:
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        raise ValueError("no job ids to ask SLURM about")
    bad = [job_id for job_id in ids if not _JOB_ID.fullmatch(job_id)]
    if bad:
        raise ValueError(f"not SLURM job ids: {bad}")
    return "--jobs=" + ",".join(ids)


def _parse_records(text: str, exit_code_of: Callable[[str], int]) -> dict[str, TaskStatus]:
    statuses: dict[str, TaskStatus] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 3:
            raise SchedulerError(f"expected 'id|state|exit code' from SLURM, got {line!r}")
        reported_id, raw_state, raw_exit = fields
        exit_code: int | None = exit_code_of(raw_exit)
        state, reason = to_job_state(raw_state, exit_code)
        if state in _NOT_FINISHED:
            exit_code = None  # SLURM reports 0 until the job ends
        for job_id, task in _expand_id(reported_id):
            status = TaskStatus(job_id, state, reason, raw_state, exit_code, task)
            statuses[status.key] = status
    return statuses


def _expand_id(reported: str) -> list[tuple[str, int | None]]:
    """`138` -> plain job; `138_2` -> one task; `138_[0-2,5%2]` -> tasks 0, 1, 2 and 5."""
    match = _REPORTED_ID.fullmatch(reported)
    if match is None:
        raise SchedulerError(f"unrecognised SLURM job id {reported!r}")
    job_id, task, task_ranges = match.groups()
    if task is not None:
        return [(job_id, int(task))]
    if task_ranges is None:
        return [(job_id, None)]
    return [(job_id, t) for t in _expand_ranges(task_ranges, reported)]


def _expand_ranges(ranges: str, reported: str) -> list[int]:
    tasks: list[int] = []
    for part in ranges.split(","):
        match = _TASK_RANGE.fullmatch(part)
        if match is None or int(match[1]) > int(match[2] or match[1]):
            raise SchedulerError(f"unrecognised array task range in {reported!r}")
        tasks.extend(range(int(match[1]), int(match[2] or match[1]) + 1))
    return tasks


def _exit_from_wait_status(raw: str) -> int:
    """squeue's `exit_code` is a raw wait status: 768 = exit 3, 9 = killed by signal 9."""
    if not raw.isdigit():
        raise SchedulerError(f"unrecognised squeue exit code {raw!r}")
    status = int(raw)
    signal = status & 0x7F
    return 128 + signal if signal else status >> 8


def _exit_from_pair(raw: str) -> int:
    """sacct's `ExitCode` is `exit:signal`: `3:0` = exit 3, `0:9` = killed by signal 9."""
    code, _, signal = raw.partition(":")
    if not (code.isdigit() and signal.isdigit()):
        raise SchedulerError(f"unrecognised sacct exit code {raw!r}")
    return 128 + int(signal) if int(signal) else int(code)

"""The job lifecycle: one enum of states and one table of the transitions allowed between them."""

from enum import StrEnum

from labctl.errors import LabctlError


class JobState(StrEnum):
    """Where a job is, from the database queue to results back home."""

    QUEUED = "queued"
    AWAITING_DATA = "awaiting_data"
    TRANSFERRING = "transferring"
    SUBMITTED = "submitted"
    PENDING = "pending"
    RUNNING = "running"
    RETRIEVING = "retrieving"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FailureReason(StrEnum):
    """Why a job ended failed or cancelled."""

    TRANSFER = "transfer"
    SUBMIT = "submit"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    EXIT_CODE = "exit_code"
    CANCELLED = "cancelled"
    RETRIEVE = "retrieve"
    SLURM = "slurm"
    CONFIG = "config"  # the job's cluster or job type is no longer configured


_S = JobState
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.AWAITING_DATA, _S.TRANSFERRING, _S.CANCELLED, _S.FAILED}),
    _S.AWAITING_DATA: frozenset({_S.TRANSFERRING, _S.CANCELLED, _S.FAILED}),
    _S.TRANSFERRING: frozenset({_S.TRANSFERRING, _S.SUBMITTED, _S.CANCELLED, _S.FAILED}),
    # -> submitted again: resubmitted automatically (labctl.jobs.resubmit)
    _S.SUBMITTED: frozenset(
        {_S.SUBMITTED, _S.PENDING, _S.RUNNING, _S.RETRIEVING, _S.FAILED, _S.CANCELLED}
    ),
    _S.PENDING: frozenset({_S.SUBMITTED, _S.RUNNING, _S.RETRIEVING, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.SUBMITTED, _S.RETRIEVING, _S.FAILED, _S.CANCELLED}),
    _S.RETRIEVING: frozenset({_S.RETRIEVING, _S.COMPLETED, _S.FAILED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset({_S.QUEUED}),
    _S.CANCELLED: frozenset({_S.QUEUED}),
}

TERMINAL: frozenset[JobState] = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
"""States no watchdog stage advances; only a retry (back to queued) leaves failed or cancelled."""

ACTIVE: frozenset[JobState] = frozenset(JobState) - TERMINAL
"""States some watchdog stage still has to advance."""

RETRYABLE: frozenset[JobState] = frozenset({JobState.FAILED, JobState.CANCELLED})
"""States a person may queue a job again from."""

WATCHED: tuple[JobState, ...] = (JobState.SUBMITTED, JobState.PENDING, JobState.RUNNING)
"""States in which the job is at its cluster's scheduler."""


class InvalidTransition(LabctlError):
    """A job was asked to move between two states the lifecycle does not connect."""


def check_transition(old: JobState, new: JobState) -> None:
    """Raise `InvalidTransition` unless the table allows `old` -> `new`."""
    if new not in TRANSITIONS[old]:
        allowed = ", ".join(sorted(TRANSITIONS[old])) or "nothing (final state)"
        raise InvalidTransition(f"a {old} job cannot become {new} (allowed: {allowed})")

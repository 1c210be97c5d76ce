"""The job lifecycle table, checked pair by pair against the lifecycle as specified."""

from itertools import product

import pytest

from labctl.model.states import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    FailureReason,
    InvalidTransition,
    JobState,
    check_transition,
)

SPECIFIED = {
    "queued": {"awaiting_data", "transferring", "cancelled", "failed"},
    "awaiting_data": {"transferring", "cancelled", "failed"},
    "transferring": {"transferring", "submitted", "cancelled", "failed"},
    # -> submitted: resubmitted automatically after TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED
    "submitted": {"submitted", "pending", "running", "retrieving", "failed", "cancelled"},
    "pending": {"submitted", "running", "retrieving", "failed", "cancelled"},
    "running": {"submitted", "retrieving", "failed", "cancelled"},
    "retrieving": {"retrieving", "completed", "failed"},
    "failed": {"queued"},
    "cancelled": {"queued"},
    "completed": set(),
}


def test_state_values_are_the_stored_strings() -> None:
    assert [s.value for s in JobState] == [
        "queued", "awaiting_data", "transferring", "submitted", "pending", "running", "retrieving",
        "completed", "failed", "cancelled",
    ]  # fmt: skip
    assert JobState("awaiting_data") is JobState.AWAITING_DATA
    assert f"{JobState.RUNNING}" == "running"


def test_failure_reason_values() -> None:
    assert {r.value for r in FailureReason} == {
        "transfer", "submit", "timeout", "out_of_memory", "node_fail", "preempted", "exit_code",
        "cancelled", "retrieve", "slurm", "config",
    }  # fmt: skip


@pytest.mark.parametrize(("old", "new"), list(product(JobState, JobState)))
def test_every_pair_is_allowed_exactly_as_specified(old: JobState, new: JobState) -> None:
    if new.value in SPECIFIED[old.value]:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"a {old} job cannot become {new} "):
            check_transition(old, new)


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(JobState)


def test_completed_is_final_and_says_so() -> None:
    with pytest.raises(InvalidTransition, match=r"allowed: nothing \(final state\)"):
        check_transition(JobState.COMPLETED, JobState.QUEUED)


def test_error_lists_the_allowed_states() -> None:
    allowed = r"allowed: cancelled, failed, retrieving, submitted\)$"
    with pytest.raises(InvalidTransition, match=allowed):
        check_transition(JobState.RUNNING, JobState.PENDING)


def test_active_and_terminal_split_the_states() -> None:
    assert {s.value for s in TERMINAL} == {"completed", "failed", "cancelled"}
    assert {s.value for s in ACTIVE} == {
        "queued", "awaiting_data", "transferring", "submitted", "pending", "running", "retrieving",
    }  # fmt: skip


def _reachable(start: JobState) -> set[JobState]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_every_state_is_reachable_from_queued() -> None:
    assert _reachable(JobState.QUEUED) == set(JobState)


@pytest.mark.parametrize("state", sorted(ACTIVE))
def test_every_active_state_can_still_end(state: JobState) -> None:
    assert JobState.COMPLETED in _reachable(state)
    assert JobState.FAILED in TRANSITIONS[state]

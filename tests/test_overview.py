"""`labctl status`'s overview of a job: state, why, what to do, time in each state."""

from __future__ import annotations

import datetime as dt
from typing import Any

from labctl.compute.transport.sessions import waiting_message
from labctl.jobs.overview import overview, state_label

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def job(**more: Any) -> dict[str, Any]:
    return {
        "job_id": "j0123456789ab",
        "dataset": "20211215_093527",
        "user": "charlie",
        "compute_cluster": "raven",
        "job_type": "file_stats",
        "status": "queued",
        "created_at": T0,
        "updated_at": T0,
        **more,
    }


def test_a_job_waiting_for_a_session_says_to_connect() -> None:
    seen = overview(job(status="transferring", waiting=waiting_message("raven")), T0)
    assert seen.why == waiting_message("raven")
    assert seen.todo == "labctl connect raven"


def test_time_in_each_state_sums_visits_and_stops_at_the_end() -> None:
    history = [
        {"state": "queued", "at": T0},
        {"state": "transferring", "at": T0 + dt.timedelta(seconds=40)},
        {"state": "pending", "at": T0 + dt.timedelta(minutes=1)},
        {"state": "running", "at": T0 + dt.timedelta(minutes=4)},
        {"state": "failed", "at": T0 + dt.timedelta(minutes=16)},
    ]
    failure = {"reason": "timeout", "message": "ran out of its 00:10:00"}
    seen = overview(job(status="failed", history=history, failure=failure), T0 + dt.timedelta(1))
    assert seen.state == "failed (timeout)" and seen.why == "ran out of its 00:10:00"
    assert seen.time_in == {
        "queued": "40s",
        "transferring": "20s",
        "pending": "3m",
        "running": "12m",
    }
    assert seen.todo == "labctl retry j0123456789ab (once the cause is fixed)"


def test_a_reason_equal_to_the_state_is_not_repeated() -> None:
    assert state_label("cancelled", "cancelled") == "cancelled"
    assert state_label("failed", "out_of_memory") == "failed (out_of_memory)"
    assert state_label("queued", None) == "queued"

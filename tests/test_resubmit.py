"""Automatic resubmission decisions, and SLURM's units in sacct records (pure, no SLURM)."""

from __future__ import annotations

import pytest

from labctl.compute.batch import JobLayout, render
from labctl.compute.sacct import SacctError, duration_seconds, size_bytes
from labctl.config.jobtypes import JobType, Resources
from labctl.jobs.resubmit import clock, plan
from labctl.model.job import Resubmission, TaskStatus, TaskUsage
from labctl.model.states import FailureReason, JobState
from tests.test_batch import CLUSTER, JOB_TYPE, job

S, R = JobState, FailureReason
DEFAULTS = Resources(time="01:00:00", mem="4G", cpus=1)
CAPPED = JobType(entry="file_stats", max_resources=Resources(time="04:00:00", mem="16G"))


def ended(reason: FailureReason | None, task: int | None = None, **usage: object) -> TaskStatus:
    state = S.RETRIEVING if reason is None else S.FAILED
    key = "138" if task is None else f"138_{task}"
    record = TaskUsage(task=key, state="X", **usage) if usage else None  # type: ignore[arg-type]
    return TaskStatus("138", state, reason, "X", 0, task, record)


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("316992K", "K", (316992 * 1024, "")),
        ("0", "K", (0, "")),
        ("123", "K", (123 * 1024, "")),
        ("4000M", "M", (4000 * 2**20, "")),
        ("2G", "M", (2 * 2**30, "")),
        ("1.50G", "M", (int(1.5 * 2**30), "")),
        ("4000Mc", "M", (4000 * 2**20, "c")),
        ("2Gn", "M", (2 * 2**30, "n")),
        ("", "M", None),
    ],
)
def test_size_units(text: str, unit: str, expected: tuple[int, str] | None) -> None:
    assert size_bytes(text, unit) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00.167", 0.167),
        ("12:34.500", 754.5),
        ("01:02:03", 3723),
        ("2-01:02:03", 2 * 86400 + 3723),
        ("", None),
    ],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["lots", "4X", "-1M"])
def test_bad_sizes_and_durations_are_refused(text: str) -> None:
    with pytest.raises(SacctError):
        size_bytes(text, "M")
    with pytest.raises(SacctError):
        duration_seconds(text)


def test_per_cpu_request_of_older_slurm_counts_every_cpu() -> None:
    from labctl.compute.sacct import read_sacct

    [record] = read_sacct("7|COMPLETED|0:0|5|00:01.000|4||1000Mc|1|100|101|106|n1\n")
    assert record.usage("7", 0).req_mem_bytes == 4 * 1000 * 2**20


def test_timeout_doubles_the_time() -> None:
    again = plan(job(), JOB_TYPE, DEFAULTS, [ended(R.TIMEOUT)], limit=2)
    assert again == Resubmission(
        count=1, resources={"time": "01:00:00", "mem": "4G", "cpus": 4}, ends=[R.TIMEOUT]
    )  # the job type's 00:30:00, doubled; its 4 CPUs and the cluster's memory kept


def test_out_of_memory_doubles_the_memory_up_to_the_cap() -> None:
    first = plan(job(), CAPPED, DEFAULTS, [ended(R.OUT_OF_MEMORY)], limit=5)
    assert isinstance(first, Resubmission) and first.resources["mem"] == "8192M"
    second = job()
    second.resubmission = Resubmission(count=1, resources={"mem": "12G"}, ends=[R.OUT_OF_MEMORY])
    capped = plan(second, CAPPED, DEFAULTS, [ended(R.OUT_OF_MEMORY)], limit=5)
    assert isinstance(capped, Resubmission) and capped.resources["mem"] == "16G"
    third = job()
    third.resubmission = Resubmission(count=2, resources={"mem": "16G"}, ends=[R.OUT_OF_MEMORY] * 2)
    assert plan(third, CAPPED, DEFAULTS, [ended(R.OUT_OF_MEMORY)], limit=5) == (
        "ran out of memory 3 times, last with mem 16G; max_resources caps mem at 16G"
    )


def test_gives_up_after_the_limit_saying_so() -> None:
    late = job()
    late.resubmission = Resubmission(
        count=2, resources={"time": "04:00:00"}, ends=[R.TIMEOUT, R.TIMEOUT]
    )
    assert plan(late, CAPPED, DEFAULTS, [ended(R.TIMEOUT)], limit=2) == (
        "timed out 3 times, last with time 04:00:00; resubmit_limit is 2"
    )
    assert plan(job(), CAPPED, DEFAULTS, [ended(R.TIMEOUT)], limit=0) == (
        "timed out, last with time 01:00:00; resubmit_limit is 0"
    )


def test_node_failure_and_preemption_run_again_as_they_were() -> None:
    for reason in (R.NODE_FAIL, R.PREEMPTED):
        again = plan(job(), JOB_TYPE, DEFAULTS, [ended(reason)], limit=2)
        assert isinstance(again, Resubmission)
        assert again.resources == {"time": "00:30:00", "mem": "4G", "cpus": 4}


def test_other_ends_are_not_resubmitted() -> None:
    for reason in (R.EXIT_CODE, R.SLURM, R.CANCELLED):
        assert plan(job(), JOB_TYPE, DEFAULTS, [ended(reason)], limit=2) is None
    mixed = [ended(R.TIMEOUT, 0), ended(R.EXIT_CODE, 1)]
    assert plan(job(num_splits=2), JOB_TYPE, DEFAULTS, mixed, limit=2) is None


def test_an_array_runs_only_its_failed_tasks_again() -> None:
    array = job(num_splits=8)
    tasks = [ended(None, t) for t in range(8) if t not in (3, 7)]
    tasks += [ended(R.TIMEOUT, 7), ended(R.NODE_FAIL, 3)]
    again = plan(array, JOB_TYPE, DEFAULTS, tasks, limit=2)
    assert isinstance(again, Resubmission) and again.tasks == [3, 7]
    array.resubmission = again
    script = render(array, JOB_TYPE, CLUSTER, JobLayout.of(CLUSTER, array.job_id))
    assert "#SBATCH --array=3,7\n" in script
    assert "#SBATCH --job-name=labctl-j0123456789a-r1\n" in script
    assert "#SBATCH --time=01:00:00\n" in script
    assert "split_idx=${SLURM_ARRAY_TASK_ID}" in script


def test_without_a_time_or_memory_asked_for_what_slurm_gave_is_doubled() -> None:
    bare = JobType(entry="file_stats")
    none = Resources()
    used = {"elapsed_s": 125.0, "req_mem_bytes": 3018 * 2**20}
    timed = plan(job(), bare, none, [ended(R.TIMEOUT, **used)], limit=2)
    assert isinstance(timed, Resubmission) and timed.resources == {"time": "00:04:10"}
    memory = plan(job(), bare, none, [ended(R.OUT_OF_MEMORY, **used)], limit=2)
    assert isinstance(memory, Resubmission) and memory.resources == {"mem": "6036M"}


def test_clock() -> None:
    assert [clock(2), clock(90.5), clock(3 * 1440 + 1)] == ["00:02:00", "01:30:30", "3-00:01:00"]

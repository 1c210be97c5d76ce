"""`SlurmScheduler.poll` over a runner that replays output captured on the testbed."""

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pytest

from labctl.compute.scheduler import SlurmScheduler
from labctl.compute.slurm import SchedulerError
from labctl.compute.transport import Result
from labctl.jobs.batch import JobLayout
from labctl.jobs.states import JobState

CAPTURED = Path(__file__).parent / "captured"
LAYOUT = JobLayout(PurePosixPath("/scratch/j1"))


class Replay:
    """A runner answering each program with one canned result, recording what it was asked."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result:
        self.asked.append(argv[0])
        code, out, err = self.answers[argv[0]]
        return Result(tuple(argv), code, out, err)

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        raise NotImplementedError

    def read_file(self, path: str) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


def test_poll_asks_accounting_when_squeue_lists_none_of_the_jobs() -> None:
    unknown = (CAPTURED / "squeue-unknown-id.stderr").read_text()
    runner = Replay(
        {
            "squeue": (1, "", unknown),
            "sacct": (0, (CAPTURED / "sacct-jobcomp.txt").read_text(), ""),
        }
    )
    scheduler = SlurmScheduler(runner, jobcomp=True)
    statuses = scheduler.poll({"16": LAYOUT, "21": LAYOUT})
    assert runner.asked == ["squeue", "sacct"] and scheduler.calls == 2
    assert statuses["16"].state is JobState.RETRIEVING
    assert (statuses["21"].state, statuses["21"].exit_code) == (JobState.FAILED, 3)


def test_poll_still_fails_on_other_squeue_errors() -> None:
    down = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    runner = Replay({"squeue": (1, "", down)})
    with pytest.raises(SchedulerError, match="Unable to contact"):
        SlurmScheduler(runner).poll({"16": LAYOUT})


@pytest.mark.testbed
def test_poll_on_the_real_testbed_falls_back_to_accounting() -> None:
    """The same fall-back against the real squeue and sacct over SSH: one job squeue knows (a
    finished one, kept for MinJobAge) and one id SLURM never had."""
    from tests.testbed import HOST, hpc_cluster, ssh

    if HOST is None:
        pytest.skip("HPC_SSH_HOST unset: run scripts/testbed.sh and source its env.sh")
    from labctl.compute.cluster import open_cluster

    known = (
        ssh(["sbatch", "--parsable", "--partition=debug", "--output=/dev/null", "--wrap=true"])
        .strip()
        .split(";")[0]
    )
    cluster = open_cluster("hpc", hpc_cluster("/tmp"))
    try:
        assert cluster.scheduler.poll({"999999": LAYOUT}) == {}  # squeue exits 1: sacct answers
        mixed = cluster.scheduler.poll({known: LAYOUT, "999999": LAYOUT})
    finally:
        cluster.close()
    assert set(mixed) == {known}
    assert mixed[known].detail in ("PENDING", "RUNNING", "COMPLETING", "COMPLETED")

"""`SlurmScheduler.poll` over a runner that replays output captured on the testbed; the
schedulers on the testbed itself."""

import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pytest

from labctl.clock import utcnow
from labctl.compute.batch import JobLayout
from labctl.compute.scheduler import (
    NotOursError,
    ProcessScheduler,
    SlurmScheduler,
    SubmitLimitError,
)
from labctl.compute.slurm import SchedulerError
from labctl.compute.transport import LocalRunner, Result
from labctl.model.states import FailureReason, JobState
from tests.test_slurm import with_restarts

CAPTURED = Path(__file__).parent / "captured"
LAYOUT = JobLayout(PurePosixPath("/scratch/j1"))


class Replay:
    """A runner answering each program with one canned result, recording what it was asked."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.argvs: list[list[str]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result:
        # env SLURM_TIME_FORMAT=%s sacct; sh -c SCRIPT find squeue (as the cluster user)
        program = argv[{"env": 2, "sh": 4}.get(argv[0], 0)]
        self.asked.append(program)
        self.argvs.append(list(argv))
        code, out, err = self.answers[program]
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
            "sacct": (0, (CAPTURED / "sacct-usage-jobcomp.txt").read_text(), ""),
        }
    )
    scheduler = SlurmScheduler(runner, jobcomp=True)
    statuses = scheduler.poll({"6226": LAYOUT, "6228": LAYOUT})
    assert runner.asked == ["squeue", "sacct"] and scheduler.calls == 2
    assert statuses["6226"].state is JobState.RETRIEVING
    assert (statuses["6228"].state, statuses["6228"].exit_code) == (JobState.FAILED, 3)


def test_poll_asks_squeue_once_and_sacct_once_for_the_finished_only() -> None:
    """Jobs squeue shows running need no accounting; finished ones get accounting's record,
    with usage, in the same single sacct call, from the oldest job's submission on."""
    running = "7001|RUNNING|0|0\n7002_[0-9]|PENDING|0|0\n"
    runner = Replay(
        {
            "squeue": (0, running + with_restarts((CAPTURED / "squeue-usage.txt").read_text()), ""),
            "sacct": (0, (CAPTURED / "sacct-usage.txt").read_text(), ""),
        }
    )
    ids = ["7001", "7002", "6226", "6227", "6228", "6229", "6230", "6231", "6232"]
    since = utcnow() - dt.timedelta(hours=2)
    statuses = SlurmScheduler(runner).poll(dict.fromkeys(ids, LAYOUT), since=since)
    assert runner.asked == ["squeue", "sacct"]
    sacct = runner.argvs[1]
    assert sacct[-1] == "--jobs=6226,6227,6228,6229,6230,6231,6232"  # not 7001, 7002
    assert "--starttime=now-10800" in sacct  # two hours back, and an hour's margin
    assert statuses["7001"].usage is None and statuses["7002_9"].state is JobState.PENDING
    memory = statuses["6229"]
    assert memory.reason is FailureReason.OUT_OF_MEMORY and memory.usage is not None
    assert memory.usage.max_rss_bytes == 316824 * 1024
    assert memory.usage.req_mem_bytes == 50 * 2**20
    task = statuses["6232_2"].usage
    assert task is not None and (task.task, task.state, task.elapsed_s) == ("6232_2", "TIMEOUT", 85)


def test_poll_keeps_squeue_word_while_accounting_lags() -> None:
    """squeue has the job finished, accounting does not yet: squeue's state stands."""
    runner = Replay(
        {
            "squeue": (0, "6226|COMPLETED|0|0\n", ""),
            "sacct": (0, "6226|RUNNING|0:0|0||1||1G|1|100|101|Unknown|localhost\n", ""),
        }
    )
    status = SlurmScheduler(runner).poll({"6226": LAYOUT})["6226"]
    assert (status.state, status.usage) == (JobState.RETRIEVING, None)


def test_poll_keeps_squeues_restart_count_under_accountings_record() -> None:
    runner = Replay(
        {
            "squeue": (0, (CAPTURED / "squeue-requeued.txt").read_text(), ""),
            "sacct": (0, "2069|COMPLETED|0:0|5||1||1G|1|100|101|106|localhost\n", ""),
        }
    )
    status = SlurmScheduler(runner).poll({"2069": LAYOUT})["2069"]
    assert (status.restarts, status.usage is not None) == (1, True)


def test_submit_refused_for_a_submit_limit() -> None:
    for name, limit in [
        ("sbatch-qos-limit.stderr", "QOSMaxSubmitJobPerUserLimit"),
        ("sbatch-assoc-limit.stderr", "AssocMaxSubmitJobLimit"),
    ]:
        runner = Replay({"sbatch": (1, "", (CAPTURED / name).read_text())})
        with pytest.raises(SubmitLimitError) as refused:
            SlurmScheduler(runner).submit(LAYOUT, 1)
        assert refused.value.limit == limit
    bad = (CAPTURED / "sbatch-bad-partition.stderr").read_text()
    with pytest.raises(SchedulerError) as other:
        SlurmScheduler(Replay({"sbatch": (1, "", bad)})).submit(LAYOUT, 1)
    assert not isinstance(other.value, SubmitLimitError)


def test_find_asks_squeue_and_then_the_accounting() -> None:
    """squeue forgot the job (MinJobAge): the accounting has it, in the attempt's window."""
    attempt = dt.datetime(2026, 12, 7, 22, 58, 20, tzinfo=dt.UTC)
    for jobcomp, found in [(False, "sacct-named.txt"), (True, "sacct-named-jobcomp.txt")]:
        runner = Replay(
            {"squeue": (0, "hpcuser\n", ""), "sacct": (0, (CAPTURED / found).read_text(), "")}
        )
        scheduler = SlurmScheduler(runner, jobcomp=jobcomp)
        assert scheduler.find("labctl-jcapture0001", LAYOUT, attempt) == "2065"
        assert runner.asked == ["squeue", "sacct"]
        assert ("--completion" in runner.argvs[1]) is jobcomp
        window = [a for a in runner.argvs[1] if a.startswith("--starttime=now-")]
        assert len(window) == 1 and int(window[0].split("-")[-1]) >= 3600


def test_find_needs_no_accounting_for_a_job_squeue_shows() -> None:
    runner = Replay({"squeue": (0, (CAPTURED / "squeue-named.txt").read_text(), "")})
    scheduler = SlurmScheduler(runner)
    assert scheduler.find("labctl-jcapture0001", LAYOUT, None) == "2065"
    assert runner.asked == ["squeue"]


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


@pytest.mark.testbed
def test_a_process_job_over_ssh_is_stopped_only_by_its_own_launcher() -> None:
    """A `process` cluster reached over SSH: the cancel's checks run on the cluster, so another
    job's launcher or a process that is no job of labctl's survives; the job's own is stopped."""
    from tests.testbed import HOST, hpc_cluster, remote_scratch, ssh

    if HOST is None:
        pytest.skip("HPC_SSH_HOST unset: run scripts/testbed.sh and source its env.sh")
    from labctl.compute.cluster import open_cluster

    def alive(pid: str) -> bool:
        return ssh(["ps", "-o", "stat=", "-p", pid], check=False).strip() not in ("", "Z")

    with remote_scratch() as scratch:
        config = hpc_cluster(scratch).model_copy(update={"scheduler": "process"})
        cluster = open_cluster("hpc", config)
        spawn = "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!"
        foreign = ssh(["sh", "-c", spawn]).strip()
        try:
            mine, other = JobLayout.of(config, "jmine"), JobLayout.of(config, "jother")
            cluster.runner.run(["mkdir", "-p", str(mine.logs), str(other.logs)])
            cluster.runner.write_file(str(other.script), "sleep 300\n", 0o755)
            launcher = cluster.scheduler.submit(other, 1)
            for job_id in (launcher, foreign, "1"):
                with pytest.raises(NotOursError, match="left alone"):
                    cluster.scheduler.cancel(job_id, mine, "labctl-jmine")
            assert alive(launcher) and alive(foreign)
            cluster.scheduler.cancel(launcher, other, "labctl-jother")
            deadline = time.monotonic() + 10
            while alive(launcher):
                assert time.monotonic() < deadline, "the job's own launcher outlived its cancel"
                time.sleep(0.1)
        finally:
            ssh(["kill", foreign], check=False)
            cluster.close()


# --- the process scheduler's launches, on this machine ---------------------------------------


def _process_job(tmp_path: Path, script: str) -> tuple[ProcessScheduler, JobLayout]:
    """A `process` scheduler on this machine, and a job folder made ready with `script`."""
    scheduler = ProcessScheduler(LocalRunner())
    layout = JobLayout(PurePosixPath(tmp_path / "j1"))
    scheduler.prepare(layout)
    Path(layout.script).write_text(script)
    return scheduler, layout


def _gone(pid: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (stat := Path(f"/proc/{pid}/stat")).exists() and " Z " not in stat.read_text():
        assert time.monotonic() < deadline, f"launcher {pid} still runs"
        time.sleep(0.05)


def test_a_process_folder_is_launched_once(tmp_path: Path) -> None:
    """A second launch of a folder, while the first runs or after it ended, runs nothing and
    reports the first launcher's pid, which `find` adopts."""
    runs = tmp_path / "runs"
    scheduler, layout = _process_job(tmp_path, f"echo ran >> {runs}; sleep 1\n")
    assert scheduler.find("labctl-j1", layout, None) is None
    first = scheduler.submit(layout, 1)
    assert scheduler.submit(layout, 1) == first  # refused while it runs
    assert scheduler.find("labctl-j1", layout, None) == first
    _gone(first)
    assert scheduler.submit(layout, 1) == first  # and once it ended
    assert scheduler.poll({first: layout})[first].state is JobState.RETRIEVING
    time.sleep(0.5)
    assert runs.read_text() == "ran\n"


def test_an_exit_file_ends_nothing_but_its_own_launch(tmp_path: Path) -> None:
    """Exit files count only for the launch that claimed the folder, and the last one only
    once its launcher has ended: until then the job runs (its folder is not to be removed)."""
    scheduler, layout = _process_job(tmp_path, "sleep 300\n")
    launcher = scheduler.submit(layout, 1)
    try:
        Path(layout.logs / "task-0.exit").write_text("0\n")  # as if written, launcher not ended
        assert scheduler.poll({launcher: layout})[launcher].detail == "alive"
        assert scheduler.poll({"999999": layout}) == {}  # another id: not this folder's launch
    finally:
        scheduler.cancel(launcher, layout, "labctl-j1")
    _gone(launcher)
    assert scheduler.poll({launcher: layout})[launcher].detail == "exited"


def test_a_new_attempt_waits_for_the_earlier_launch_then_launches_afresh(tmp_path: Path) -> None:
    """`prepare` (a retried job) refuses while the earlier attempt's launch runs; once it ended
    it clears its claim and outputs, and the folder is launched again, once, with none of the
    earlier launch's exit files counted."""
    runs = tmp_path / "runs"
    scheduler, layout = _process_job(tmp_path, f"echo ran >> {runs}; sleep 1; exit 3\n")
    first = scheduler.submit(layout, 1)
    with pytest.raises(SchedulerError, match=f"process {first} of an earlier attempt still runs"):
        scheduler.prepare(layout)
    _gone(first)
    Path(layout.outputs / "result.json").write_text("{}")  # the earlier attempt's
    scheduler.prepare(layout)
    assert scheduler.find("labctl-j1", layout, None) is None
    assert not any(Path(layout.outputs).iterdir())
    Path(layout.script).write_text(f"echo ran >> {runs}; sleep 1\n")
    second = scheduler.submit(layout, 1)
    assert second != first
    assert scheduler.poll({second: layout})[second].state is JobState.RUNNING  # not exit 3
    _gone(second)
    assert scheduler.poll({second: layout})[second].state is JobState.RETRIEVING
    assert runs.read_text() == "ran\nran\n"

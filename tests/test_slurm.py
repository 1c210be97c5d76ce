"""SLURM parsing against output captured on the testbed (see tests/captured/README.md)."""

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from labctl.compute.slurm import (
    SUBMIT_SKEW,
    Named,
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
    to_job_state,
)
from labctl.errors import LabctlError
from labctl.model.job import TaskStatus
from labctl.model.states import FailureReason, JobState, check_transition

CAPTURED = Path(__file__).parent / "captured"
S, R = JobState, FailureReason


def captured(name: str) -> str:
    return (CAPTURED / name).read_text()


def with_restarts(text: str) -> str:
    """A squeue capture made before labctl asked for `RestartCnt`, as squeue prints it now: none
    of those jobs was requeued, so each line ends in `|0`."""
    return "".join(f"{line}|0\n" for line in text.splitlines())


def summary(statuses: dict[str, TaskStatus]) -> dict[str, tuple[str, str | None, int | None]]:
    return {key: (s.state, s.reason, s.exit_code) for key, s in statuses.items()}


# --- sbatch ---------------------------------------------------------------------------------


def test_parse_sbatch_plain_and_array() -> None:
    assert parse_sbatch(captured("sbatch-parsable.txt")) == "16"
    assert parse_sbatch(captured("sbatch-parsable-array.txt")) == "17"


def test_parse_sbatch_drops_the_cluster_name() -> None:
    assert parse_sbatch("138;cluster-a\n") == "138"


@pytest.mark.parametrize(
    "stdout",
    ["", "\n", captured("sbatch-bad-partition.stderr"), "138 139", "abc;cluster", ";138", "-1"],
)
def test_parse_sbatch_rejects_garbage(stdout: str) -> None:
    with pytest.raises(SchedulerError, match="sbatch --parsable printed no job id"):
        parse_sbatch(stdout)


# --- commands -------------------------------------------------------------------------------


def test_squeue_command_asks_once_for_all_jobs_finished_included() -> None:
    assert squeue_command(["16", "17", "16", "28_3"]) == [
        "squeue", "--noheader", "--states=all", "--jobs=16,17,28_3",
        "--Format=JobArrayID:|,State:|,exit_code:|,RestartCnt:",
    ]  # fmt: skip


def test_sacct_command_with_and_without_jobcomp() -> None:
    fields = "JobID,State,ExitCode,ElapsedRaw,TotalCPU,AllocCPUS,MaxRSS,ReqMem,NNodes,Submit,"
    fmt = f"--format={fields}Start,End,NodeList"
    epoch = ["env", "SLURM_TIME_FORMAT=%s", "sacct"]
    common = ["--parsable2", "--noheader"]
    assert sacct_command(["21", "24"], since_seconds=7200) == [
        *epoch, *common, "--starttime=now-7200", fmt, "--jobs=21,24",
    ]  # fmt: skip
    assert sacct_command(("21",), since_seconds=5, jobcomp=True) == [
        *epoch, "--completion", *common, "--starttime=now-60", fmt, "--jobs=21",
    ]  # fmt: skip


@pytest.mark.parametrize("ids", [[], ["abc"], ["1;rm -rf ~"], ["17_[0-3]"], [" 16"]])
def test_commands_refuse_missing_or_odd_ids(ids: list[str]) -> None:
    with pytest.raises(ValueError):
        squeue_command(ids)
    with pytest.raises(ValueError):
        sacct_command(ids, since_seconds=60)


# --- squeue ---------------------------------------------------------------------------------


def test_parse_squeue_with_jobs_pending_running_and_finished() -> None:
    assert summary(parse_squeue(with_restarts(captured("squeue-live.txt")))) == {
        "16": (S.RETRIEVING, None, 0),
        **{f"17_{t}": (S.RETRIEVING, None, 0) for t in range(4)},
        "21": (S.FAILED, R.EXIT_CODE, 3),
        "22": (S.FAILED, R.EXIT_CODE, 128 + 9),
        "23": (S.FAILED, R.EXIT_CODE, 128 + 53),
        "24": (S.FAILED, R.TIMEOUT, 128 + 15),
        "25": (S.CANCELLED, R.CANCELLED, 128 + 15),
        **{f"26_{t}": (S.CANCELLED, R.CANCELLED, 0) for t in range(4)},
        "27": (S.RUNNING, None, None),
        "28_0": (S.RUNNING, None, None),
        "28_1": (S.RUNNING, None, None),
        "28_2": (S.PENDING, None, None),
        **{f"29_{t}": (S.PENDING, None, None) for t in range(4)},
        "30": (S.PENDING, None, None),
    }


def test_parse_squeue_names_array_tasks_by_parent_and_task() -> None:
    statuses = parse_squeue(with_restarts(captured("squeue-live.txt")))
    assert statuses["17_2"] == TaskStatus("17", S.RETRIEVING, None, "COMPLETED", 0, 2)
    assert statuses["29_3"] == TaskStatus("29", S.PENDING, None, "PENDING", None, 3)
    assert statuses["16"] == TaskStatus("16", S.RETRIEVING, None, "COMPLETED", 0, None)
    assert statuses["16"].key == "16"
    assert statuses["28_1"].key == "28_1"


def test_parse_squeue_after_cancelling_everything() -> None:
    statuses = parse_squeue(with_restarts(captured("squeue-after-cancel.txt")))
    cancelled = {k for k, s in statuses.items() if s.state is S.CANCELLED}
    assert cancelled == {"25", "27", "28_0", "28_1", "28_2", "30"} | {
        f"{job}_{t}" for job in (26, 29) for t in range(4)
    }
    assert all(statuses[k].reason is R.CANCELLED for k in cancelled)
    assert "28_3" not in statuses  # cancelled while pending: SLURM forgets the task
    assert summary(statuses)["24"] == (S.FAILED, R.TIMEOUT, 143)


def test_parse_squeue_counts_a_jobs_requeues() -> None:
    """2069 was requeued by `scontrol requeue` while running: pending again, then completed."""
    pending = parse_squeue(captured("squeue-requeued-pending.txt"))
    assert (pending["2069"].state, pending["2069"].restarts) == (S.PENDING, 1)
    done = parse_squeue(captured("squeue-requeued.txt"))
    assert done["2069"] == TaskStatus("2069", S.RETRIEVING, None, "COMPLETED", 0, restarts=1)
    assert done["2070"].restarts == 0


def test_parse_squeue_of_empty_output() -> None:
    assert parse_squeue("") == {}
    assert parse_squeue("\n") == {}


EXPECTED = "expected 'id|state|exit code|restarts' from squeue"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (captured("squeue-unknown-id.stderr"), EXPECTED),
        (with_restarts(captured("sacct-jobcomp.txt")), "unrecognised squeue exit code '0:0'"),
        ("16|COMPLETED|0", EXPECTED),
        ("16|COMPLETED|0|", EXPECTED),
        ("16|COMPLETED|0|1|", EXPECTED),
        ("16|COMPLETED|0|x", EXPECTED),
        ("abc|RUNNING|0|0", "unrecognised SLURM job id 'abc'"),
        ("16.batch|RUNNING|0|0", "unrecognised SLURM job id"),
        ("16_[3-]|PENDING|0|0", "unrecognised array task range"),
        ("16_[-3]|PENDING|0|0", "unrecognised array task range"),
        ("16_[5-3]|PENDING|0|0", "unrecognised array task range"),
        ("16_[1,,2]|PENDING|0|0", "unrecognised array task range"),
        ("16|WAITING|0|0", "unknown SLURM job state 'WAITING'"),
        ("16||0|0", "unknown SLURM job state ''"),
        ("16|RUNNING||0", "unrecognised squeue exit code ''"),
    ],
)
def test_parse_squeue_rejects_garbage(text: str, message: str) -> None:
    with pytest.raises(SchedulerError, match=re.escape(message)):
        parse_squeue(text)


# --- sacct ----------------------------------------------------------------------------------


def test_parse_sacct_from_slurmdbd() -> None:
    """Real slurmdbd output (tests/captured/README.md): steps folded into their job or task; a
    job jobacct_gather killed above its --mem (6229: FAILED, signal 9) counts as out of memory."""
    assert summary(parse_sacct(captured("sacct-usage.txt"))) == {
        "6226": (S.RETRIEVING, None, 0),
        "6228": (S.FAILED, R.EXIT_CODE, 3),
        "6229": (S.FAILED, R.OUT_OF_MEMORY, 128 + 9),
        "6230": (S.FAILED, R.TIMEOUT, 0),
        "6231": (S.CANCELLED, R.CANCELLED, 0),
        "6227_0": (S.RETRIEVING, None, 0),
        "6227_1": (S.RETRIEVING, None, 0),
        "6227_2": (S.RETRIEVING, None, 0),
        "6232_0": (S.RETRIEVING, None, 0),
        "6232_1": (S.RETRIEVING, None, 0),
        "6232_2": (S.FAILED, R.TIMEOUT, 0),
        "6232_3": (S.RETRIEVING, None, 0),
    }


def test_parse_sacct_from_the_jobcomp_log() -> None:
    assert summary(parse_sacct(captured("sacct-usage-jobcomp.txt"))) == {
        "6226": (S.RETRIEVING, None, 0),
        "6227": (S.RETRIEVING, None, 0),  # one of its tasks: the jobcomp log knows no arrays
        "6228": (S.FAILED, R.EXIT_CODE, 3),
        "6229": (S.FAILED, R.EXIT_CODE, 128 + 9),  # no MaxRSS in that log: not known as memory
        "6230": (S.FAILED, R.TIMEOUT, 0),
        "6231": (S.CANCELLED, R.CANCELLED, 0),
        "6232": (S.RETRIEVING, None, 0),
    }


def line(job_id: str, state: str, exit_code: str = "0:0", rss: str = "", req: str = "") -> str:
    return f"{job_id}|{state}|{exit_code}|5|00:01.500|2|{rss}|{req}|1|100|110|115|node1"


def test_parse_sacct_pending_arrays_and_older_states() -> None:
    text = "\n".join(
        [
            line("138_2", "CANCELLED by 1001", "0:15"),
            line("138_[3-4]", "PENDING"),
            line("139", "OUT_OF_MEMORY", "0:125"),
            line("140", "PREEMPTED"),
            line("141", "NODE_FAIL", "1:0"),
        ]
    )
    statuses = parse_sacct(text)
    assert summary(statuses) == {
        "138_2": (S.CANCELLED, R.CANCELLED, 143),
        "138_3": (S.PENDING, None, None),
        "138_4": (S.PENDING, None, None),
        "139": (S.FAILED, R.OUT_OF_MEMORY, 253),
        "140": (S.FAILED, R.PREEMPTED, 0),
        "141": (S.FAILED, R.NODE_FAIL, 1),
    }
    assert statuses["138_3"].usage is None  # not finished: nothing to account yet
    assert statuses["138_2"].usage is not None and statuses["138_2"].usage.task == "138_2"
    odd = parse_sacct(line("16", "COMPLETED", req="16?"))["16"].usage  # seen from slurmdbd
    assert odd is not None and odd.req_mem_bytes is None and odd.elapsed_s == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (captured("squeue-live.txt"), "expected 13 fields from sacct"),
        (captured("sacct-jobcomp.txt"), "expected 13 fields from sacct"),  # an older format
        (captured("sacct-usage-jobcomp.stderr"), "expected 13 fields from sacct"),
        (line("16", "COMPLETED", "0"), "unrecognised sacct exit code '0'"),
        (line("16", "COMPLETED", "x:0"), "unrecognised sacct exit code 'x:0'"),
        (line("16.batch", "COMPLETED"), "sacct printed step '16.batch' before its job"),
        (
            line("16", "COMPLETED") + "\n" + line("16.batch", "COMPLETED", rss="lots"),
            "unrecognised SLURM size 'lots'",
        ),
    ],
)
def test_parse_sacct_rejects_garbage(text: str, message: str) -> None:
    with pytest.raises(LabctlError, match=re.escape(message)):
        parse_sacct(text)


# --- state mapping --------------------------------------------------------------------------

MAPPING = [
    ("PENDING", S.PENDING, None),
    ("REQUEUED", S.PENDING, None),
    ("REQUEUE_HOLD", S.PENDING, None),
    ("REQUEUE_FED", S.PENDING, None),
    ("RESV_DEL_HOLD", S.PENDING, None),
    ("CONFIGURING", S.RUNNING, None),
    ("RUNNING", S.RUNNING, None),
    ("COMPLETING", S.RUNNING, None),
    ("SIGNALING", S.RUNNING, None),
    ("STAGE_OUT", S.RUNNING, None),
    ("RESIZING", S.RUNNING, None),
    ("SUSPENDED", S.RUNNING, None),
    ("STOPPED", S.RUNNING, None),
    ("COMPLETED", S.RETRIEVING, None),
    ("FAILED", S.FAILED, R.EXIT_CODE),
    ("SPECIAL_EXIT", S.FAILED, R.EXIT_CODE),
    ("TIMEOUT", S.FAILED, R.TIMEOUT),
    ("DEADLINE", S.FAILED, R.TIMEOUT),
    ("OUT_OF_MEMORY", S.FAILED, R.OUT_OF_MEMORY),
    ("NODE_FAIL", S.FAILED, R.NODE_FAIL),
    ("BOOT_FAIL", S.FAILED, R.NODE_FAIL),
    ("PREEMPTED", S.FAILED, R.PREEMPTED),
    ("REVOKED", S.FAILED, R.SLURM),
    ("CANCELLED", S.CANCELLED, R.CANCELLED),
    ("CANCELLED by 0", S.CANCELLED, R.CANCELLED),
    ("CANCELLED by 1001", S.CANCELLED, R.CANCELLED),
]


@pytest.mark.parametrize(("slurm_state", "state", "reason"), MAPPING)
def test_to_job_state(slurm_state: str, state: JobState, reason: FailureReason | None) -> None:
    assert to_job_state(slurm_state, 3) == (state, reason)


@pytest.mark.parametrize(("slurm_state", "state", "_reason"), MAPPING)
def test_every_mapped_state_is_a_legal_step_after_submit(
    slurm_state: str, state: JobState, _reason: FailureReason | None
) -> None:
    check_transition(JobState.SUBMITTED, state)


@pytest.mark.parametrize("exit_code", [0, None])
def test_failed_without_an_exit_code_is_slurms_doing(exit_code: int | None) -> None:
    assert to_job_state("FAILED", exit_code) == (S.FAILED, R.SLURM)


@pytest.mark.parametrize("slurm_state", ["", " ", "running", "CANCELLED+", "WAITING", "UNKNOWN"])
def test_to_job_state_rejects_unknown_states(slurm_state: str) -> None:
    with pytest.raises(SchedulerError, match="unknown SLURM job state"):
        to_job_state(slurm_state, None)


def test_every_state_in_the_reference_squeue_json_maps() -> None:
    jobs = json.loads(captured("squeue-22.05.json"))["jobs"]
    mapped = [to_job_state(job["job_state"], job["exit_code"] >> 8) for job in jobs]
    assert mapped.count((S.RETRIEVING, None)) == 40
    assert mapped.count((S.FAILED, R.EXIT_CODE)) == 2
    assert mapped.count((S.CANCELLED, R.CANCELLED)) == 2
    assert mapped.count((S.FAILED, R.TIMEOUT)) == 1


# --- a job found by its name (adopting what a killed run submitted) ------------------------

NAME = "labctl-jcapture0001"
ARRAY = Named("2065", dt.datetime(2026, 12, 7, 22, 58, 27, tzinfo=dt.UTC))


def test_named_commands_ask_for_the_cluster_users_own_jobs() -> None:
    squeue = named_squeue_command(NAME)
    assert squeue[:2] == ["sh", "-c"] and 'echo "$me"' in squeue[2]
    assert squeue[4:] == [
        "squeue",
        "--noheader",
        "--states=all",
        f"--name={NAME}",
        "--format=%F|%j|%u|%V",
    ]
    sacct = named_sacct_command(NAME, since_seconds=7200)
    assert sacct[2] == squeue[2] and sacct[4] == "sacct"
    assert "--starttime=now-7200" in sacct and "--completion" not in sacct
    assert "--completion" in named_sacct_command(NAME, since_seconds=7200, jobcomp=True)


@pytest.mark.parametrize("name", ["squeue-named.txt", "sacct-named.txt"])
def test_read_named_folds_an_arrays_tasks(name: str) -> None:
    assert read_named(captured(name), NAME) == [ARRAY] * 3


def test_read_named_from_the_jobcomp_log_keeps_the_users_jobs_of_that_name() -> None:
    """The jobcomp log ignores --name and --user: root's job of the same name (2064) and the
    other jobs are left out; the array's tasks come under their raw ids."""
    later = ARRAY.submitted + dt.timedelta(seconds=1)
    found = read_named(captured("sacct-named-jobcomp.txt"), NAME)
    assert found == [Named("2065", later), Named("2067", later), Named("2066", later)]
    assert named_since(found, ARRAY.submitted) == "2065"  # the array's own id


def test_named_since_takes_the_attempts_job_not_an_earlier_attempts() -> None:
    """A person's retry submits under the same name: the earlier attempt's job is older."""
    attempt = dt.datetime(2026, 12, 7, 23, 0, tzinfo=dt.UTC)
    earlier = Named("90", attempt - dt.timedelta(minutes=5))
    this = Named("120", attempt + dt.timedelta(seconds=1))
    lagging = Named("121", attempt - SUBMIT_SKEW)  # the cluster's clock a little behind
    assert named_since([earlier, this], attempt) == "120"
    assert named_since([earlier, lagging], attempt) == "121"
    assert named_since([earlier], attempt) is None
    assert named_since([], attempt) is None
    assert named_since([this, earlier], None) == "90"  # no time recorded: the first


@pytest.mark.parametrize(
    "text",
    ["hpcuser\n2065|labctl-x|hpcuser\n", "hpcuser\nabc|labctl-x|hpcuser|1\n"],
)
def test_read_named_rejects_garbage(text: str) -> None:
    with pytest.raises(SchedulerError, match=re.escape("expected 'id|name|user|submit'")):
        read_named(text, "labctl-x")

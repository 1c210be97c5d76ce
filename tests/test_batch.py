"""The batch script: golden files, quoting, arrays."""

from __future__ import annotations

import datetime as dt
import shlex
import subprocess
from pathlib import Path

import pytest

from labctl.compute.batch import JobLayout, array_size, expected_outputs, render
from labctl.config import ClusterConfig
from labctl.config.jobtypes import JobType, Resources
from labctl.model.job import Job
from labctl.model.states import JobState

GOLDEN = Path(__file__).parent / "golden"
CLUSTER = ClusterConfig(
    host="raven.example.org",
    user="abc123",
    scratch="/ptmp/abc123/labctl",
    account="lab_acct",
    setup=["module purge", "module load anaconda/3/2023.03"],
    python="python3",
    resources=Resources(time="01:00:00", mem="4G", cpus=1, partition="general"),
)
JOB_TYPE = JobType(
    entry="file_stats",
    outputs=["file_stats_{split_idx}.json", "summary.json"],
    splittable=True,
    resources=Resources(time="00:30:00", cpus=4),
)


def job(**options: object) -> Job:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return Job(
        job_id="j0123456789a",
        dataset="20211215_093527",
        user="alice",
        compute_cluster="raven",
        job_type="diff_registration",
        status=JobState.SUBMITTED,
        job_options=options,
        created_at=now,
        updated_at=now,
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("single", {"num_splits": 1, "label": 'it\'s $(rm -rf ~); `x` "q"'}),
        ("array", {"num_splits": 4}),
        ("one_split", {"num_splits": 4, "split_idx": 2}),
    ],
)
def test_golden(name: str, options: dict[str, object]) -> None:
    script = render(job(**options), JOB_TYPE, CLUSTER, JobLayout.of(CLUSTER, "j0123456789a"))
    golden = GOLDEN / f"batch_{name}.sh"
    assert script == golden.read_text(), f"update {golden} if this change is intended"


def test_script_is_valid_bash_and_user_values_stay_data(tmp_path: Path) -> None:
    hostile = "'; touch " + str(tmp_path / "pwned") + "; echo '"
    script = render(
        job(num_splits=1, label=hostile), JOB_TYPE, CLUSTER, JobLayout.of(CLUSTER, "j0123456789a")
    )
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0
    exec_line = script.splitlines()[-1]
    argv = shlex.split(exec_line)
    assert argv[0] == "exec"
    assert argv[argv.index("--options") + 1] == (
        '{"label": "' + hostile.replace('"', '\\"') + '", "num_splits": 1}'
    )
    assert not (tmp_path / "pwned").exists()


def test_resources_and_outputs() -> None:
    script = render(job(num_splits=1), JOB_TYPE, CLUSTER, JobLayout.of(CLUSTER, "j1"))
    assert "#SBATCH --time=00:30:00" in script  # the job type's own
    assert "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --mem=4G" in script  # the cluster's default
    assert "#SBATCH --partition=general" in script
    assert array_size(job(num_splits=4)) == 4
    assert array_size(job(num_splits=4, split_idx=1)) == 1
    assert expected_outputs(job(num_splits=3), JOB_TYPE) == [
        "file_stats_0.json",
        "file_stats_1.json",
        "file_stats_2.json",
        "summary.json",
        "environment_0.json",
        "environment_1.json",
        "environment_2.json",
    ]
    assert expected_outputs(job(num_splits=3, split_idx=1), JOB_TYPE) == [
        "file_stats_1.json",
        "summary.json",
        "environment_1.json",
    ]
    plain = JobType(entry="selftest", outputs=["selftest.json"])
    assert expected_outputs(job(), plain) == ["selftest.json", "environment.json"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scratch", "/ptmp/a b"),
        ("scratch", "relative"),
        ("scratch", "/ptmp/../etc"),
        ("account", "x;y"),
        ("resources", {"time": "1h; rm"}),
        ("resources", {"mem": "4G\n#"}),
    ],
)
def test_values_reaching_sbatch_directives_are_validated(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        ClusterConfig.model_validate({"host": "h", "user": "u", "scratch": "/s", field: value})

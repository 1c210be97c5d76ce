"""`python -m pipelines` as the batch script runs it: real files, new processes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import pipelines
from pipelines.__main__ import job_types
from pipelines.tests.support import Cli, Synthetic, run_args

CODE = Path(pipelines.__file__).resolve().parent.parent  # what PYTHONPATH points at on a cluster


def python_m_pipelines(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(CODE)}
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generate_split_register_merge_and_summarize(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    generated = python_m_pipelines(
        *("generate", "--out", "inputs/raw", "--frames", "20", "--height", "64", "--width", "72"),
        *("--seed", "5"),
        cwd=job,
    )
    assert generated.returncode == 0, generated.stderr
    for k in range(2):
        split = [
            "--split-idx",
            str(k),
            "--num-splits",
            "2",
            "--options",
            '{"stack_dataset": "data"}',
        ]
        done = python_m_pipelines(
            *run_args("diff_registration", Path("inputs"), Path("outputs"), *split), cwd=job
        )
        assert done.returncode == 0, done.stderr
    merge_inputs = tmp_path / "merge" / "inputs" / "data"
    merge_inputs.mkdir(parents=True)
    for k in range(2):
        (job / "outputs" / f"registration_{k}.h5").rename(merge_inputs / f"registration_{k}.h5")
    merged = python_m_pipelines(
        *run_args("merge_splits", Path("inputs"), Path("outputs")), cwd=tmp_path / "merge"
    )
    assert merged.returncode == 0, merged.stderr
    with (
        h5py.File(tmp_path / "merge" / "outputs" / "registration.h5") as result,
        h5py.File(job / "inputs" / "raw" / "true_shifts.h5") as truth,
    ):
        assert np.abs(result["shifts"][()] - truth["shifts"][()]).max() < 0.5
    environment = json.loads((job / "outputs" / "environment_1.json").read_text())
    assert environment["job_type"] == "diff_registration" and environment["split_idx"] == 1
    assert environment["options"]["stack_dataset"] == "data" and environment["exit_code"] == 0
    assert environment["packages"]["h5py"] and environment["hdf5"]
    assert environment["python"]["version"].startswith(f"{sys.version_info[0]}.")
    summary = python_m_pipelines(
        *run_args("summary_stats", Path("inputs"), Path("outputs")), cwd=job
    )
    assert summary.returncode == 0, summary.stderr
    assert (job / "outputs" / "summary_stats.png").stat().st_size > 0


def test_stdlib_job_types_still_run(synthetic: Synthetic, tmp_path: Path) -> None:
    done = python_m_pipelines(*run_args("file_stats", synthetic.inputs, tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "file_stats.json").read_text())
    assert sorted(stats["files"]) == ["data/reference.h5", "raw/stack.h5"]
    assert json.loads((tmp_path / "environment.json").read_text())["job_type"] == "file_stats"


def test_a_missing_stack_is_one_line_and_status_2(tmp_path: Path) -> None:
    done = python_m_pipelines(
        *run_args("diff_registration", tmp_path, tmp_path / "out"), cwd=tmp_path
    )
    assert done.returncode == 2
    assert (
        done.stderr
        == f"python -m pipelines: error: input raw/stack.h5 (stack) not found in {tmp_path}\n"
    )
    assert not (tmp_path / "out" / "registration.h5").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--options", "{nope"], "--options is not valid JSON"),
        (["--options", "[1]"], "--options must be a JSON object"),
        (["--options", '{"stak": "x"}'], "unknown option(s) stak"),
        (["--options", '{"stack": 5}'], "option stack must be str, got 5"),
        (
            ["--options", '{"stack_dataset": "nope"}'],
            "raw/stack.h5 has no dataset 'nope' (it has: data)",
        ),
        (
            ["--options", '{"reference": "data/nope.h5"}'],
            "input data/nope.h5 (reference) not found",
        ),
        (["--split-idx", "4", "--num-splits", "4"], "split_idx must be in 0..3, got 4"),
    ],
)
def test_bad_options_are_one_line_and_status_2(
    synthetic: Synthetic, tmp_path: Path, cli: Cli, extra: list[str], message: str
) -> None:
    code, _, err = cli(*run_args("diff_registration", synthetic.inputs, tmp_path, *extra))
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err


def test_a_reference_of_another_shape_is_refused(
    synthetic: Synthetic, tmp_path: Path, cli: Cli
) -> None:
    inputs = tmp_path / "inputs"
    (inputs / "data").mkdir(parents=True)
    (inputs / "raw").symlink_to(synthetic.inputs / "raw")
    with h5py.File(inputs / "data" / "ref.h5", "w") as handle:
        handle["reference"] = np.zeros((10, 10))
    options = json.dumps({"reference": "data/ref.h5"})
    code, _, err = cli(
        *run_args("diff_registration", inputs, tmp_path / "out", "--options", options)
    )
    assert code == 2 and "reference data/ref.h5:reference is (10, 10), frames are (96, 117)" in err


def test_a_split_of_a_job_type_that_cannot_split_is_refused(
    synthetic: Synthetic, tmp_path: Path, cli: Cli
) -> None:
    split = ["--split-idx", "0", "--num-splits", "2"]
    code, _, err = cli(*run_args("summary_stats", synthetic.inputs, tmp_path, *split))
    assert code == 2 and "summary_stats is not splittable" in err


def test_an_unknown_job_type_or_missing_argument_is_one_line(tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli(*run_args("no_such_type", tmp_path, tmp_path))
    assert code == 2 and err.count("\n") == 1 and "invalid choice: 'no_such_type'" in err
    code, _, err = cli("run", "file_stats", "--inputs", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "required" in err


def test_job_types_are_the_top_level_modules() -> None:
    found = set(job_types())
    assert {"diff_registration", "merge_splits", "summary_stats", "file_stats"} <= found
    assert not found & {"__main__", "__init__", "core", "tests"}


def test_generate_refuses_a_tiny_frame(tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("generate", "--out", str(tmp_path), "--height", "4")
    assert code == 2 and "--height, --width >= 8" in err

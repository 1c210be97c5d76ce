"""`python -m pipelines run` under the oldest Python the pipelines support (pipelines.MIN_PYTHON).

The code is shipped as the watchdog ships it (a `code/pipelines` folder on PYTHONPATH) and run
by that interpreter in a subprocess: pyenv's bare 3.8 in the full suite, where the stdlib job
types run and the imaging ones must fail in one line; `LABCTL_FLOOR_PYTHON` names another, and
scripts/matrix.sh passes a 3.8 with numpy, scipy and h5py, where the imaging ones run too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipelines import MIN_PYTHON
from pipelines.__main__ import main
from tests.interpreters import interpreter

REPO = Path(__file__).resolve().parent.parent
FLOOR = ".".join(map(str, MIN_PYTHON))
IMAGING = ("diff_registration", "merge_splits", "summary_stats")
DATASET = "20240101_120000"


@pytest.fixture(scope="module")
def floor_python() -> Path:
    """The floor interpreter, checked to be exactly that version."""
    python = Path(os.environ.get("LABCTL_FLOOR_PYTHON") or interpreter(FLOOR))
    done = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == FLOOR, f"{python} is Python {done.stdout.strip()}, not {FLOOR}"
    return python


@pytest.fixture(scope="module")
def has_imaging_packages(floor_python: Path) -> bool:
    probe = [str(floor_python), "-c", "import numpy, scipy, h5py"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pipelines/ in a `code` folder, as a job receives it (without labctl beside it)."""
    folder = tmp_path_factory.mktemp("code")
    shutil.copytree(
        REPO / "pipelines", folder / "pipelines", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


def pipelines(
    python: Path, code: Path, *args: str | Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`python -m pipelines ARGS` as the batch script runs it."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(code), "PYTHONNOUSERSITE": "1"}
    done = subprocess.run(
        [str(python), "-m", "pipelines", *map(str, args)],
        env=env, cwd=code, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done


def run_args(job_type: str, inputs: Path, outputs: Path, *extra: str) -> list[str]:
    return [
        "run", job_type, "--dataset", DATASET, "--inputs", str(inputs), "--outputs", str(outputs),
        *extra,
    ]  # fmt: skip


def environment(path: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads(path.read_text())
    return report


def test_stdlib_job_types_run_under_the_floor(
    floor_python: Path, code: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    files = {"raw/fl_a.roli": b"one\ntwo\n", "raw/sub dir/fl b.roli": b"\x00" * 1000}
    for name, content in files.items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_bytes(content)
    out = tmp_path / "outputs"

    pipelines(floor_python, code, *run_args("file_stats", inputs, out))
    stats = json.loads((out / "file_stats.json").read_text())
    assert stats == {
        "dataset": DATASET,
        "files": {
            name: {
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "lines": content.count(b"\n"),
            }
            for name, content in files.items()
        },
    }
    report = environment(out / "environment.json")
    assert str(report["python"]["version"]).startswith(FLOOR + ".")  # type: ignore[index]
    assert report["exit_code"] == 0

    for k in (0, 1):
        split = ["--split-idx", str(k), "--num-splits", "2"]
        pipelines(floor_python, code, *run_args("file_stats", inputs, out, *split))
    halves = [json.loads((out / f"file_stats_{k}.json").read_text())["files"] for k in (0, 1)]
    assert {**halves[0], **halves[1]} == stats["files"] and all(len(h) == 1 for h in halves)

    failing = pipelines(
        floor_python, code, *run_args("selftest", inputs, out, "--options", '{"exit_code": 3}'),
        check=False,
    )  # fmt: skip
    assert failing.returncode == 3, failing.stderr
    selftest = json.loads((out / "selftest.json").read_text())
    assert selftest["python"].startswith(FLOOR + ".")
    assert selftest["inputs"] == sorted(files)
    assert environment(out / "environment.json")["exit_code"] == 3


def test_imaging_job_types_without_their_packages_fail_in_one_line(
    floor_python: Path, code: Path, tmp_path: Path, has_imaging_packages: bool
) -> None:
    if has_imaging_packages:
        pytest.skip(f"{floor_python} has numpy, scipy and h5py")
    for job_type in IMAGING:
        done = pipelines(
            floor_python, code, *run_args(job_type, tmp_path, tmp_path / "out"), check=False
        )
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1, done.stderr
        assert f"error: {job_type} needs the package " in done.stderr


def test_imaging_job_types_run_under_the_floor_as_they_do_here(
    floor_python: Path, code: Path, tmp_path: Path, has_imaging_packages: bool
) -> None:
    """generate, a split registration, its merge and a summary under the floor, compared with
    the same registration in this process (the lab server's Python and packages)."""
    if not has_imaging_packages:
        pytest.skip(
            f"{floor_python} lacks numpy, scipy or h5py: scripts/matrix.sh runs this with "
            "LABCTL_FLOOR_PYTHON set to a 3.8 that has them"
        )
    inputs = tmp_path / "inputs"
    size = ["--frames", "12", "--height", "40", "--width", "37", "--seed", "3"]
    pipelines(floor_python, code, "generate", "--out", inputs / "raw", *size)
    for k in (0, 1):
        split = ["--split-idx", str(k), "--num-splits", "2"]
        pipelines(
            floor_python, code, *run_args("diff_registration", inputs, tmp_path / "s", *split)
        )
    merged = tmp_path / "merged"
    pipelines(floor_python, code, *run_args("merge_splits", tmp_path / "s", merged))
    stats = ["--options", json.dumps({"stack": "registration.h5", "stack_dataset": "registered"})]
    pipelines(floor_python, code, *run_args("summary_stats", merged, tmp_path / "sum", *stats))
    assert (tmp_path / "sum" / "summary_stats.png").read_bytes().startswith(b"\x89PNG")
    report = environment(tmp_path / "sum" / "environment.json")
    assert str(report["python"]["version"]).startswith(FLOOR + ".")  # type: ignore[index]

    assert main(run_args("diff_registration", inputs, tmp_path / "here")) == 0
    with (
        h5py.File(merged / "registration.h5") as floor,
        h5py.File(tmp_path / "here" / "registration.h5") as here,
    ):
        np.testing.assert_array_equal(floor["frames"][()], here["frames"][()])
        np.testing.assert_allclose(floor["shifts"][()], here["shifts"][()], atol=1e-6)
        assert np.abs(floor["shifts"][()]).max() > 1  # frames really moved

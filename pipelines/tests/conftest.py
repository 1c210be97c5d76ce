"""A small synthetic dataset laid out like a job's inputs folder, and the CLI called in-process."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest

from pipelines.__main__ import main
from pipelines.core.synthetic import write_dataset
from pipelines.tests.support import FRAMES, HEIGHT, WIDTH, Cli, Synthetic


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    inputs = tmp_path_factory.mktemp("inputs")
    stack_path, reference_path, truth_path = write_dataset(
        inputs / "raw", FRAMES, HEIGHT, WIDTH, seed=7, max_shift=4.0, noise=0.05
    )
    (inputs / "data").mkdir()
    reference_path.rename(inputs / "data" / "reference.h5")
    with h5py.File(truth_path) as truth, h5py.File(stack_path) as stack:
        shifts, frames = truth["shifts"][()], stack["data"][()]
    truth_path.unlink()
    return Synthetic(inputs, shifts, frames)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """`python -m pipelines ARGS...` in this process: (exit status, stdout, stderr)."""

    def invoke(*argv: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse refusing the command line
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke

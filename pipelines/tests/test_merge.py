"""`merge_splits` rebuilds the unsplit run's file, and refuses gaps, overlaps and mixed runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipelines.__main__ import main
from pipelines.tests.support import DATASET, Cli, Synthetic, run_args

NUM_SPLITS = 4


@pytest.fixture(scope="module")
def runs(synthetic: Synthetic, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`whole/registration.h5` and `shards/registration_{k}.h5` of one split run."""
    root = tmp_path_factory.mktemp("runs")
    options = ["--options", json.dumps({"reference": "data/reference.h5"})]
    assert main(run_args("diff_registration", synthetic.inputs, root / "whole", *options)) == 0
    for k in range(NUM_SPLITS):
        split = ["--split-idx", str(k), "--num-splits", str(NUM_SPLITS)]
        args = run_args("diff_registration", synthetic.inputs, root / "shards", *options, *split)
        assert main(args) == 0
    return root


def shard_inputs(runs: Path, tmp_path: Path, splits: range = range(NUM_SPLITS)) -> Path:
    """An inputs folder holding the shards as a merge job receives them."""
    folder = tmp_path / "inputs" / "data" / "results" / "job-1"
    folder.mkdir(parents=True)
    for k in splits:
        shutil.copy(runs / "shards" / f"registration_{k}.h5", folder)
    return tmp_path / "inputs"


def test_merge_equals_the_unsplit_run(runs: Path, tmp_path: Path, cli: Cli) -> None:
    code, out, err = cli(*run_args("merge_splits", shard_inputs(runs, tmp_path), tmp_path / "out"))
    assert code == 0, err
    assert "4 split(s), 48 frames" in out
    with (
        h5py.File(tmp_path / "out" / "registration.h5") as merged,
        h5py.File(runs / "whole" / "registration.h5") as whole,
    ):
        for key in ("frames", "shifts", "registered", "reference"):
            np.testing.assert_array_equal(merged[key][()], whole[key][()], err_msg=key)
        attrs = dict(merged.attrs)
        assert json.loads(attrs.pop("merged_from")) == [
            f"registration_{k}.h5" for k in range(NUM_SPLITS)
        ]
        assert attrs == dict(whole.attrs)
    assert json.loads((tmp_path / "out" / "environment.json").read_text())["exit_code"] == 0


def _refused(cli: Cli, inputs: Path, outputs: Path, message: str, dataset: str = DATASET) -> None:
    args = run_args("merge_splits", inputs, outputs)
    args[args.index("--dataset") + 1] = dataset
    code, _, err = cli(*args)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert not (outputs / "registration.h5").exists()


def test_a_missing_split_is_refused(runs: Path, tmp_path: Path, cli: Cli) -> None:
    inputs = shard_inputs(runs, tmp_path, range(3))
    _refused(cli, inputs, tmp_path / "out", "split(s) 3 of 4 missing")


def test_a_split_twice_is_refused(runs: Path, tmp_path: Path, cli: Cli) -> None:
    inputs = shard_inputs(runs, tmp_path)
    shutil.copy(runs / "shards" / "registration_1.h5", inputs / "registration_1.h5")
    _refused(cli, inputs, tmp_path / "out", "split 1 twice")


@pytest.mark.parametrize(
    ("offset", "message"),
    [(1, "frames 12..12 are in no split"), (-1, "frames 11..11 are in more than one split")],
)
def test_gaps_and_overlaps_are_refused(
    runs: Path, tmp_path: Path, cli: Cli, offset: int, message: str
) -> None:
    inputs = shard_inputs(runs, tmp_path)
    with h5py.File(next(inputs.rglob("registration_1.h5")), "r+") as shard:
        shard["frames"][:] += offset  # split 1 holds frames 12..23
    _refused(cli, inputs, tmp_path / "out", message)


def test_shards_of_another_run_are_refused(runs: Path, tmp_path: Path, cli: Cli) -> None:
    inputs = shard_inputs(runs, tmp_path)
    with h5py.File(next(inputs.rglob("registration_2.h5")), "r+") as shard:
        shard.attrs["stack"] = "raw/other.h5"
    _refused(
        cli,
        inputs,
        tmp_path / "out",
        "not from the same run: stack is raw/other.h5 vs raw/stack.h5",
    )


def test_shards_of_another_dataset_are_refused(runs: Path, tmp_path: Path, cli: Cli) -> None:
    inputs = shard_inputs(runs, tmp_path)
    _refused(cli, inputs, tmp_path / "out", "not 20991231_000000", dataset="20991231_000000")


def test_no_shards_is_refused(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "inputs").mkdir()
    _refused(cli, tmp_path / "inputs", tmp_path / "out", "matches '**/registration_*.h5'")


def test_a_pattern_leaving_the_inputs_folder_is_refused(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "inputs").mkdir()
    options = json.dumps({"pattern": "../**/registration_*.h5"})
    code, _, err = cli(
        *run_args("merge_splits", tmp_path / "inputs", tmp_path, "--options", options)
    )
    assert code == 2 and "option pattern must be a glob inside the inputs folder" in err

"""Splits cover every frame exactly once, in contiguous runs; options are typed and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipelines.core.common import PipelineError, input_file, parse_options, split_range
from pipelines.core.synthetic import write_dataset
from pipelines.tests.support import FRAMES, Cli, Synthetic, run_args


@pytest.mark.parametrize(
    ("n_frames", "num_splits"),
    [(1, 1), (10, 1), (10, 3), (10, 10), (3, 5), (100, 7), (1000, 64), (0, 4)],
)
def test_splits_cover_every_frame_exactly_once(n_frames: int, num_splits: int) -> None:
    parts = [split_range(n_frames, k, num_splits) for k in range(num_splits)]
    assert [i for part in parts for i in part] == list(range(n_frames))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert split_range(n_frames, None, num_splits) == range(n_frames)


@pytest.mark.parametrize(("split_idx", "num_splits"), [(0, 0), (-1, 3), (3, 3)])
def test_a_split_that_does_not_exist_is_refused(split_idx: int, num_splits: int) -> None:
    with pytest.raises(PipelineError, match="must be"):
        split_range(10, split_idx, num_splits)


@pytest.mark.parametrize(("n_frames", "num_splits"), [(FRAMES, 5), (4, 6)])
def test_split_runs_register_every_frame_once_like_the_unsplit_run(
    synthetic: Synthetic, tmp_path: Path, cli: Cli, n_frames: int, num_splits: int
) -> None:
    inputs = synthetic.inputs
    if n_frames != FRAMES:  # more splits than frames: some splits are empty
        inputs = tmp_path / "inputs"
        write_dataset(inputs / "raw", n_frames, 16, 16, seed=1)
    assert cli(*run_args("diff_registration", inputs, tmp_path / "whole"))[0] == 0
    for k in range(num_splits):
        extra = ["--split-idx", str(k), "--num-splits", str(num_splits)]
        code, _, err = cli(*run_args("diff_registration", inputs, tmp_path, *extra))
        assert code == 0, err
    seen: list[int] = []
    with h5py.File(tmp_path / "whole" / "registration.h5") as whole:
        for k in range(num_splits):
            with h5py.File(tmp_path / f"registration_{k}.h5") as part:
                frames = part["frames"][()]
                assert (part.attrs["split_idx"], part.attrs["num_splits"]) == (k, num_splits)
                np.testing.assert_array_equal(part["shifts"][()], whole["shifts"][frames])
                seen += frames.tolist()
    assert seen == list(range(n_frames))


@dataclass(frozen=True)
class _Options:
    name: str = "x"
    count: int = 1
    scale: float = 1.0
    split_idx: int | None = None
    num_splits: int = 1


def test_options_are_typed() -> None:
    opts = parse_options(_Options, {"count": 3, "scale": 2, "split_idx": 1, "num_splits": 2}, "t")
    assert opts == _Options(count=3, scale=2.0, split_idx=1, num_splits=2)
    assert isinstance(opts.scale, float)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cuont": 3}, "unknown option.* cuont .*options: count, name, scale"),
        ({"count": "3"}, "option count must be int, got '3'"),
        ({"count": True}, "option count must be int, got True"),
        ({"scale": "big"}, "option scale must be float"),
        ({"split_idx": 2, "num_splits": 2}, "split_idx must be in 0..1"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_options(_Options, options, "t")


def test_a_job_type_without_split_options_refuses_a_split() -> None:
    @dataclass(frozen=True)
    class Plain:
        name: str = "x"

    assert parse_options(Plain, {"split_idx": None, "num_splits": 1}, "t") == Plain()
    with pytest.raises(PipelineError, match="t is not splittable"):
        parse_options(Plain, {"split_idx": 0, "num_splits": 2}, "t")


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x.h5", "raw/../../x.h5"])
def test_inputs_outside_the_inputs_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PipelineError, match="must be a path inside the inputs folder"):
        input_file(tmp_path, name, "stack")

"""`merge_splits`: joins the `registration_{k}.h5` files of a split `diff_registration` run.

Inputs: every file under the inputs folder matching the glob `pattern` (default
`**/registration_*.h5`), e.g. the shards brought home from one array job and shipped as datafiles.

Output: `registration.h5`, the same file an unsplit run writes (frames sorted, each exactly once),
with the attribute `merged_from` listing the shards' file names in split order (names only: the
folder they were shipped in names the array's job, and a merge of the same shards must write the
same bytes whichever job made them; labctl's lineage links the files by checksum).

Refused, with one line naming the problem: a missing or duplicate split index, shards of different
runs (stack, reference, frame count or dataset differ), frames that no shard holds (a gap) or that
two shards hold (an overlap).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from pipelines.core.common import PipelineError, atomic_output, batches, parse_options
from pipelines.core.h5 import SPLIT_ATTRS, create_registration, open_input

JOB_TYPE = "merge_splits"
INTERFACE = {
    "help": "combines the shards of a split registration into one registration.h5",
    "outputs": ["registration.h5"],
    "options": {
        "pattern": {
            "type": "str",
            "default": "**/registration_*.h5",
            "help": "glob of the splits' files in the inputs",
        },
    },
}
SAME_IN_EVERY_SHARD = ("dataset", "stack", "stack_dataset", "reference")


@dataclass(frozen=True)
class Options:
    pattern: str = "**/registration_*.h5"


@dataclass(frozen=True)
class Shard:
    """What merging needs to know about one split's file."""

    path: Path
    name: str
    split_idx: int
    num_splits: int
    first: int
    count: int
    attrs: dict[str, Any]
    reference: NDArray[Any]


def run(dataset: str, inputs: Path, outputs: Path, options: dict[str, Any]) -> int:
    opts = parse_options(Options, options, JOB_TYPE)
    pattern = PurePosixPath(opts.pattern)
    if not opts.pattern or pattern.is_absolute() or ".." in pattern.parts:
        raise PipelineError(f"option pattern must be a glob inside the inputs folder: {pattern}")
    paths = sorted(p for p in inputs.glob(opts.pattern) if p.is_file())
    if not paths:
        raise PipelineError(f"no file in {inputs} matches {opts.pattern!r}")
    shards = [_shard(path, inputs) for path in paths]
    n_total = _check(shards, dataset)
    attrs = {k: v for k, v in shards[0].attrs.items() if k not in SPLIT_ATTRS}
    ordered = sorted(shards, key=lambda s: s.split_idx)
    attrs["merged_from"] = json.dumps([s.path.name for s in ordered])
    target = outputs / "registration.h5"
    with atomic_output(target) as partial, h5py.File(partial, "w") as out:
        create_registration(out, n_total, shards[0].reference, attrs)
        for shard in shards:
            _copy(shard, out, shards[0].reference.size)
    print(f"{JOB_TYPE}: {len(shards)} split(s), {n_total} frames of {dataset} -> {target}")
    return 0


def _shard(path: Path, inputs: Path) -> Shard:
    """Read and check the bookkeeping of one shard: split attributes and contiguous frames."""
    name = str(path.relative_to(inputs))
    with open_input(path, name) as handle:
        attrs = dict(handle.attrs)
        missing = [k for k in (*SPLIT_ATTRS, "n_frames_total") if k not in attrs]
        missing += [k for k in ("frames", "shifts", "registered", "reference") if k not in handle]
        if missing:
            raise PipelineError(f"{name} is not a split of a registration (no {missing[0]})")
        frames = np.asarray(handle["frames"][()])
        reference = np.asarray(handle["reference"][()])
    first = int(frames[0]) if len(frames) else 0
    if not np.array_equal(frames, np.arange(first, first + len(frames))):
        raise PipelineError(f"{name}: its frames are not one increasing contiguous run")
    split_idx, num_splits = int(attrs["split_idx"]), int(attrs["num_splits"])
    return Shard(path, name, split_idx, num_splits, first, len(frames), attrs, reference)


def _check(shards: list[Shard], dataset: str) -> int:
    """Refuse shards that do not make exactly one whole run; return its number of frames."""
    base = shards[0]
    for shard in shards[1:]:
        for key in (*SAME_IN_EVERY_SHARD, "num_splits", "n_frames_total"):
            if shard.attrs.get(key) != base.attrs.get(key):
                raise PipelineError(
                    f"{shard.name} and {base.name} are not from the same run: {key} is "
                    f"{shard.attrs.get(key)} vs {base.attrs.get(key)}"
                )
        if not np.array_equal(shard.reference, base.reference):
            raise PipelineError(f"{shard.name} and {base.name} have different reference images")
    if base.attrs.get("dataset") != dataset:
        raise PipelineError(f"the splits are of dataset {base.attrs.get('dataset')}, not {dataset}")
    by_index: dict[int, Shard] = {}
    for shard in shards:
        if not 0 <= shard.split_idx < base.num_splits:
            raise PipelineError(f"{shard.name}: split_idx {shard.split_idx} of {base.num_splits}")
        if shard.split_idx in by_index:
            other = by_index[shard.split_idx].name
            raise PipelineError(f"split {shard.split_idx} twice: {other} and {shard.name}")
        by_index[shard.split_idx] = shard
    missing = sorted(set(range(base.num_splits)) - set(by_index))
    if missing:
        names = ", ".join(map(str, missing))
        raise PipelineError(f"split(s) {names} of {base.num_splits} missing")
    n_total = int(base.attrs["n_frames_total"])
    covered, previous = 0, base.name
    for shard in sorted(shards, key=lambda s: (s.first, s.split_idx)):
        if not shard.count:
            continue
        if shard.first < 0 or shard.first + shard.count > n_total:
            raise PipelineError(f"{shard.name} holds frames outside 0..{n_total - 1}")
        if shard.first > covered:
            raise PipelineError(f"frames {covered}..{shard.first - 1} are in no split")
        if shard.first < covered:
            last = min(covered, shard.first + shard.count) - 1
            raise PipelineError(
                f"frames {shard.first}..{last} are in more than one split: "
                f"{previous} and {shard.name}"
            )
        covered, previous = shard.first + shard.count, shard.name
    if covered != n_total:
        raise PipelineError(f"frames {covered}..{n_total - 1} are in no split")
    return n_total


def _copy(shard: Shard, out: h5py.File, frame_pixels: int) -> None:
    """Copy one shard's rows into their place in the merged file, a batch at a time."""
    with open_input(shard.path, shard.name) as handle:
        for batch in batches(range(shard.count), frame_pixels):
            at = slice(shard.first + batch.start, shard.first + batch.stop)
            rows = slice(batch.start, batch.stop)
            for key in ("frames", "shifts", "registered"):
                out[key][at] = handle[key][rows]

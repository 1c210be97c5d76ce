"""HDF5 in and out: opening inputs with one-line errors, and the layout of a registration file.

A registration file (`registration.h5`, or `registration_{k}.h5` for split k) holds:
- `frames` (n, int64): indices of the frames in the source stack, increasing and contiguous;
- `shifts` (n x 2, float64): `(dy, dx)` in pixels, frame(y, x) ~ reference(y - dy, x - dx);
- `registered` (n x H x W, float32): the frames moved back by their shifts;
- `reference` (H x W, float32): the reference image they were registered against;
- attributes: `dataset`, `stack`, `stack_dataset`, `reference` (where the reference came from),
  `n_frames_total` (frames in the whole stack), and on a split's file `split_idx` and
  `num_splits`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from pipelines.core.common import PipelineError

SPLIT_ATTRS = ("split_idx", "num_splits")


@contextmanager
def open_input(path: Path, label: str) -> Iterator[h5py.File]:
    """`path` opened read-only; a file that is not HDF5 is a PipelineError naming `label`."""
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise PipelineError(f"{label} is not a readable HDF5 file: {_first_line(exc)}") from None
    with handle:
        yield handle


def numeric_dataset(handle: h5py.File, name: str, label: str, ndim: int) -> h5py.Dataset:
    """The dataset `name` of `handle`: it must exist, be numeric and have `ndim` dimensions."""
    node = handle.get(name)
    if not isinstance(node, h5py.Dataset):
        found = ", ".join(sorted(handle)) or "nothing"
        raise PipelineError(f"{label} has no dataset {name!r} (it has: {found})")
    if node.ndim != ndim or node.dtype.kind not in "uif":
        raise PipelineError(
            f"{label}:{name} must be a {ndim}-d numeric array, got {node.dtype} {node.shape}"
        )
    return node


def create_registration(
    handle: h5py.File,
    n_frames: int,
    reference: NDArray[np.generic],
    attrs: Mapping[str, Any],
) -> None:
    """Empty datasets of a registration file for `n_frames` frames of the reference's shape."""
    height, width = reference.shape
    handle.create_dataset("frames", (n_frames,), dtype=np.int64)
    handle.create_dataset("shifts", (n_frames, 2), dtype=np.float64)
    handle.create_dataset(
        "registered",
        (n_frames, height, width),
        dtype=np.float32,
        chunks=(1, height, width) if n_frames else None,
    )
    handle.create_dataset("reference", data=reference.astype(np.float32))
    handle["shifts"].attrs["columns"] = "dy, dx"
    handle.attrs.update(dict(attrs))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

"""`summary_stats`: mean, standard deviation and maximum of an imaging stack, with a preview.

Input: HDF5 file `stack` (default `raw/stack.h5`, relative to the inputs folder), dataset
`stack_dataset` (default `data`), frames x H x W, any numeric type (a registration's
`registered` works too). Read a batch of frames at a time, so the stack may exceed memory.

Outputs:
- `summary_stats.h5`: projections over frames `mean`, `std`, `max` (H x W) and per-frame series
  `frame_mean`, `frame_std`, `frame_max` (frames), all float64; `std` is the population standard
  deviation (ddof=0), combined across batches with Chan et al.'s pairwise update;
- `summary_stats.png`: the mean, std and max projections side by side (greyscale, each scaled to
  its own 0.5..99.5 percentiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from pipelines.core.common import (
    PipelineError,
    atomic_output,
    batches,
    input_file,
    parse_options,
)
from pipelines.core.h5 import numeric_dataset, open_input
from pipelines.core.png import to_uint8, write_png

JOB_TYPE = "summary_stats"
INTERFACE = {
    "help": "mean / std / max projections and a PNG preview",
    "outputs": ["summary_stats.h5", "summary_stats.png"],
    "options": {
        "stack": {"type": "str", "default": "raw/stack.h5", "help": "HDF5 stack, frames x H x W"},
        "stack_dataset": {"type": "str", "default": "data", "help": "the stack's dataset"},
    },
}
PANEL_GAP_PX = 4


@dataclass(frozen=True)
class Options:
    stack: str = "raw/stack.h5"
    stack_dataset: str = "data"


def run(dataset: str, inputs: Path, outputs: Path, options: dict[str, Any]) -> int:
    opts = parse_options(Options, options, JOB_TYPE)
    stack_path = input_file(inputs, opts.stack, "stack")
    with open_input(stack_path, opts.stack) as handle:
        stack = numeric_dataset(handle, opts.stack_dataset, opts.stack, ndim=3)
        if 0 in stack.shape:
            raise PipelineError(f"{opts.stack}:{opts.stack_dataset} has shape {stack.shape}")
        stats = summarize(stack)
    with atomic_output(outputs / "summary_stats.h5") as partial, h5py.File(partial, "w") as out:
        for name, values in stats.items():
            out.create_dataset(name, data=values)
        out.attrs.update(
            {"dataset": dataset, "stack": opts.stack, "stack_dataset": opts.stack_dataset}
        )
    with atomic_output(outputs / "summary_stats.png") as partial:
        write_png(partial, preview([stats["mean"], stats["std"], stats["max"]]))
    print(f"{JOB_TYPE}: {stack.shape[0]} frames of {dataset} -> {outputs / 'summary_stats.h5'}")
    return 0


def summarize(stack: h5py.Dataset | NDArray[Any]) -> dict[str, NDArray[np.float64]]:
    """Projections and per-frame statistics of `stack` (frames x H x W), in float64."""
    n_frames, height, width = stack.shape
    count = 0
    mean = np.zeros((height, width))
    m2 = np.zeros((height, width))
    peak = np.full((height, width), -np.inf)
    per_frame = {key: np.empty(n_frames) for key in ("frame_mean", "frame_std", "frame_max")}
    for batch in batches(range(n_frames), height * width):
        block = np.asarray(stack[batch.start : batch.stop], dtype=np.float64)
        block_mean = block.mean(axis=0)
        delta = block_mean - mean
        total = count + len(block)
        mean += delta * (len(block) / total)
        m2 += ((block - block_mean) ** 2).sum(axis=0) + delta**2 * (count * len(block) / total)
        count = total
        np.maximum(peak, block.max(axis=0), out=peak)
        where = slice(batch.start, batch.stop)
        per_frame["frame_mean"][where] = block.mean(axis=(1, 2))
        per_frame["frame_std"][where] = block.std(axis=(1, 2))
        per_frame["frame_max"][where] = block.max(axis=(1, 2))
    return {"mean": mean, "std": np.sqrt(m2 / count), "max": peak, **per_frame}


def preview(images: list[NDArray[np.float64]]) -> NDArray[np.uint8]:
    """The images side by side as 8-bit greyscale, separated by black gaps."""
    gap = np.zeros((images[0].shape[0], PANEL_GAP_PX), np.uint8)
    panels: list[NDArray[np.uint8]] = []
    for image in images:
        panels += [to_uint8(image), gap]
    return np.hstack(panels[:-1])

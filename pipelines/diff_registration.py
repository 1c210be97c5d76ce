"""`diff_registration`: rigid (translation) registration of an imaging stack to a reference.

Inputs (paths are relative to the job's inputs folder, which holds `data/` and `raw/`):
- the stack: HDF5 file `stack` (default `raw/stack.h5`), dataset `stack_dataset` (default
  `data`), frames x H x W, any numeric type;
- the reference: by default frame 0 of the stack; or, with `reference` naming an HDF5 file
  (e.g. `data/phase_and_reference.h5`), its H x W dataset `reference_dataset` (default
  `reference`).

Method: phase correlation with sub-pixel refinement in two passes, see
`pipelines.core.registration`.

Splittable: split k of n registers a contiguous run of frames (`numpy.array_split` sizes: every
frame in exactly one split) and writes `registration_{k}.h5`; an unsplit run writes
`registration.h5`. `merge_splits` joins the splits into the unsplit run's file. The layout is in
`pipelines.core.h5`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np
from numpy.typing import NDArray

from pipelines.core.common import (
    PipelineError,
    atomic_output,
    batches,
    input_file,
    output_name,
    parse_options,
    split_range,
)
from pipelines.core.h5 import create_registration, numeric_dataset, open_input
from pipelines.core.registration import prepare_reference, register

JOB_TYPE = "diff_registration"
INTERFACE = {
    "help": "rigid registration of an imaging stack by phase correlation",
    "outputs": ["registration_{split_idx}.h5"],
    "options": {
        "stack": {"type": "str", "default": "raw/stack.h5", "help": "HDF5 stack, frames x H x W"},
        "stack_dataset": {"type": "str", "default": "data", "help": "the stack's dataset"},
        "reference": {
            "type": "str",
            "default": "",
            "help": "HDF5 file with the reference frame; empty: frame 0",
        },
        "reference_dataset": {"type": "str", "default": "reference", "help": "its H x W dataset"},
    },
    "splittable": True,
    "merge_with": "merge_splits",
    "resources": {"time": "01:00:00", "mem": "8G", "cpus": 1},
    "max_resources": {"time": "12:00:00", "mem": "64G", "cpus": 8},
}


@dataclass(frozen=True)
class Options:
    stack: str = "raw/stack.h5"
    stack_dataset: str = "data"
    reference: str = ""
    reference_dataset: str = "reference"
    split_idx: Optional[int] = None  # parse_options evaluates it: no `int | None` on 3.8
    num_splits: int = 1


def run(dataset: str, inputs: Path, outputs: Path, options: dict[str, Any]) -> int:
    opts = parse_options(Options, options, JOB_TYPE)
    stack_path = input_file(inputs, opts.stack, "stack")
    name = output_name("registration", ".h5", opts.split_idx)
    with open_input(stack_path, opts.stack) as stack_file:
        stack = numeric_dataset(stack_file, opts.stack_dataset, opts.stack, ndim=3)
        n_total = stack.shape[0]
        if n_total == 0 or min(stack.shape[1:]) < 8:
            raise PipelineError(
                f"{opts.stack}:{opts.stack_dataset} has shape {stack.shape}: need at least one "
                "frame of at least 8 x 8 pixels"
            )
        frames = split_range(n_total, opts.split_idx, opts.num_splits)
        image, origin = _reference(inputs, opts, stack)
        reference = prepare_reference(image)
        attrs: dict[str, Any] = {
            "dataset": dataset,
            "stack": opts.stack,
            "stack_dataset": opts.stack_dataset,
            "reference": origin,
            "n_frames_total": n_total,
        }
        if opts.split_idx is not None:
            attrs.update(split_idx=opts.split_idx, num_splits=opts.num_splits)
        with atomic_output(outputs / name) as partial, h5py.File(partial, "w") as out:
            create_registration(out, len(frames), image, attrs)
            out["frames"][:] = np.asarray(frames, dtype=np.int64)
            for batch in batches(frames, image.size):
                at = slice(batch.start - frames.start, batch.stop - frames.start)
                out["shifts"][at], out["registered"][at] = register(
                    stack[batch.start : batch.stop], reference
                )
    print(f"{JOB_TYPE}: frames {_span(frames)} of {n_total} of {dataset} -> {outputs / name}")
    return 0


def _reference(inputs: Path, opts: Options, stack: h5py.Dataset) -> tuple[NDArray[Any], str]:
    """The reference image and where it came from."""
    if not opts.reference:
        return np.asarray(stack[0]), f"frame 0 of {opts.stack}:{opts.stack_dataset}"
    path = input_file(inputs, opts.reference, "reference")
    with open_input(path, opts.reference) as handle:
        image = np.asarray(numeric_dataset(handle, opts.reference_dataset, opts.reference, 2)[()])
    if image.shape != stack.shape[1:]:
        raise PipelineError(
            f"reference {opts.reference}:{opts.reference_dataset} is {image.shape}, "
            f"frames are {stack.shape[1:]}"
        )
    return image, f"{opts.reference}:{opts.reference_dataset}"


def _span(frames: range) -> str:
    return f"{frames.start}..{frames.stop - 1}" if frames else "none"

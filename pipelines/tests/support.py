"""What the pipelines tests share besides fixtures: the test dataset's shape and the CLI's form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

DATASET = "20240101_120000"
FRAMES, HEIGHT, WIDTH = 48, 96, 117  # odd width, not square: catches mixed-up axes

Cli = Callable[..., tuple[int, str, str]]


@dataclass(frozen=True)
class Synthetic:
    """`inputs/raw/stack.h5`, `inputs/data/reference.h5` and the true shifts."""

    inputs: Path
    true_shifts: NDArray[np.float64]
    stack: NDArray[np.uint16]


def run_args(job_type: str, inputs: Path, outputs: Path, *extra: str) -> list[str]:
    """The arguments of `python -m pipelines run` as the batch script passes them."""
    paths = ["--inputs", str(inputs), "--outputs", str(outputs)]
    return ["run", job_type, "--dataset", DATASET, *paths, *extra]

"""Synthetic imaging stacks with known sub-pixel shifts (`python -m pipelines generate`).

A field of Gaussian blobs (sigma 1.5, 2.5 and 4 px, at random pixels), larger than a frame by a
margin, is moved by each frame's shift with the Fourier shift theorem (exact: the blobs are
band-limited) and cropped to H x W, so that, as in real data, content enters and leaves at the
borders. Frames are in counts: a baseline of 100 plus the field scaled to peak at 1000 above it,
plus Gaussian noise of `noise` x 1000 counts, rounded to uint16.

Files written to the output folder:
- `stack.h5`: dataset `data` (frames x H x W, uint16);
- `reference.h5`: dataset `reference` (H x W, float32): the unshifted field without noise;
- `true_shifts.h5`: dataset `shifts` (frames x 2, float64): `(dy, dx)` px in the convention of
  `pipelines.core.registration`. Frame 0 is not shifted, so registering against frame 0 or
  against `reference.h5` recovers the same shifts.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

BLOB_SIGMAS_PX = (1.5, 2.5, 4.0)
PIXELS_PER_BLOB = 300
BASELINE = 100.0
PEAK = 1000.0


def synthesize(
    frames: int, height: int, width: int, seed: int, max_shift: float = 4.0, noise: float = 0.05
) -> tuple[NDArray[np.uint16], NDArray[np.float64], NDArray[np.float32]]:
    """The stack, its true shifts (uniform in +-max_shift, frame 0 unshifted) and the reference."""
    rng = np.random.default_rng(seed)
    margin = math.ceil(max_shift) + 8
    field_shape = (height + 2 * margin, width + 2 * margin)
    ky = sfft.fftfreq(field_shape[0])[:, None]
    kx = sfft.rfftfreq(field_shape[1])[None, :]
    spectrum = np.zeros((field_shape[0], field_shape[1] // 2 + 1), dtype=np.complex128)
    for sigma in BLOB_SIGMAS_PX:
        points = np.zeros(field_shape)
        count = points.size // PIXELS_PER_BLOB
        rows, cols = rng.integers(0, field_shape[0], count), rng.integers(0, field_shape[1], count)
        points[rows, cols] = rng.uniform(0.5, 1.0, count) * sigma**2
        spectrum += sfft.rfft2(points) * np.exp(-2 * (np.pi * sigma) ** 2 * (ky**2 + kx**2))
    spectrum *= PEAK / sfft.irfft2(spectrum, s=field_shape).max()
    crop = (slice(margin, margin + height), slice(margin, margin + width))

    shifts = rng.uniform(-max_shift, max_shift, (frames, 2))
    shifts[:1] = 0.0
    stack = np.empty((frames, height, width), dtype=np.uint16)
    for i, (dy, dx) in enumerate(shifts):
        moved = sfft.irfft2(spectrum * np.exp(-2j * np.pi * (ky * dy + kx * dx)), s=field_shape)
        counts = BASELINE + moved[crop] + rng.normal(0.0, noise * PEAK, (height, width))
        stack[i] = np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max)
    reference = (BASELINE + sfft.irfft2(spectrum, s=field_shape)[crop]).astype(np.float32)
    return stack, shifts, reference


def write_dataset(
    out: Path,
    frames: int,
    height: int,
    width: int,
    seed: int,
    max_shift: float = 4.0,
    noise: float = 0.05,
) -> list[Path]:
    """Write `stack.h5`, `reference.h5` and `true_shifts.h5` into `out`; return their paths."""
    stack, shifts, reference = synthesize(frames, height, width, seed, max_shift, noise)
    out.mkdir(parents=True, exist_ok=True)
    attrs = {"seed": seed, "max_shift": max_shift, "noise": noise}
    paths = [out / "stack.h5", out / "reference.h5", out / "true_shifts.h5"]
    for path, name, data in zip(paths, ("data", "reference", "shifts"), (stack, reference, shifts)):
        with h5py.File(path, "w") as handle:
            handle.create_dataset(name, data=data)
            handle.attrs.update(attrs)
    return paths

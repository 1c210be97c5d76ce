"""Registration throughput of the pipeline on one core, against a straightforward NumPy baseline.

    python -m benchmarks.bench_pipelines [--frames 100] [--size 512] [--repeat 5]

Writes a synthetic stack (`python -m pipelines generate`: known sub-pixel shifts up to 4 px) to a
temporary folder, then times, in one subprocess with OMP/OPENBLAS/MKL threads set to 1 (SciPy's
FFT uses one thread unless asked), against frame 0 as the reference:

- baseline: NumPy phase correlation frame by frame (`np.fft.fft2`, full whitening, integer peak,
  no taper, no refinement), frames registered with `np.roll`;
- pipeline, in memory: `pipelines.core.registration.register` on the batches `diff_registration`
  uses (two passes of tapered, half-whitened phase correlation with a parabolic sub-pixel peak,
  frames moved back by Fourier shift);
- pipeline job: `python -m pipelines run diff_registration` end to end, with interpreter start,
  reading the stack from and writing `registration.h5` to HDF5.

After one warm-up run each (which also gives the errors), the three take turns `--repeat` times.
Seconds are medians, as wall time and as CPU time (user + system, the job's subprocess included);
frames/s is from CPU time, which other work on a shared machine disturbs far less than wall time.
"x baseline" is frames/s over the baseline's in the same round (median of the rounds, with its
spread). "max error" is the largest difference in px, in either axis, from the true shifts.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
from numpy.typing import NDArray

from benchmarks.common import median, spread
from pipelines.core.common import batches
from pipelines.core.registration import prepare_reference, register

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BASELINE = "numpy baseline (integer peak)"

Shifts = NDArray[np.float64]


def baseline(
    stack: NDArray[np.generic], reference: NDArray[np.generic]
) -> tuple[Shifts, NDArray[np.float64]]:
    """Integer shifts by textbook phase correlation, and the frames rolled back by them."""
    conj_reference = np.conj(np.fft.fft2(reference))
    height, width = reference.shape
    shifts = np.empty((len(stack), 2))
    registered = np.empty(stack.shape)
    for i, frame in enumerate(stack):
        cross = np.fft.fft2(frame) * conj_reference
        cross /= np.maximum(np.abs(cross), 1e-12)
        row, col = np.unravel_index(np.argmax(np.fft.ifft2(cross).real), (height, width))
        dy, dx = (
            row - height if row > height // 2 else row,
            col - width if col > width // 2 else col,
        )
        shifts[i] = dy, dx
        registered[i] = np.roll(frame, (-dy, -dx), axis=(0, 1))
    return shifts, registered


def pipeline(
    stack: NDArray[np.generic], reference: NDArray[np.generic]
) -> tuple[Shifts, NDArray[np.float32]]:
    """The pipeline's registration in memory, batch by batch as `diff_registration` runs it."""
    prepared = prepare_reference(reference)
    shifts = np.empty((len(stack), 2))
    registered = np.empty(stack.shape, np.float32)
    for batch in batches(range(len(stack)), reference.size):
        at = slice(batch.start, batch.stop)
        shifts[at], registered[at] = register(stack[at], prepared)
    return shifts, registered


def job(folder: Path) -> Shifts:
    """`python -m pipelines run diff_registration` on the stack in `folder/inputs`."""
    command = [sys.executable, "-m", "pipelines", "run", "diff_registration", "--dataset", "bench"]
    paths = ["--inputs", str(folder / "inputs"), "--outputs", str(folder / "outputs")]
    subprocess.run([*command, *paths], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with h5py.File(folder / "outputs" / "registration.h5") as result:
        return np.asarray(result["shifts"][()])


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(folder: Path, repeat: int) -> None:
    """Run in the one-thread subprocess: time the three ways and print the table."""
    with h5py.File(folder / "inputs" / "raw" / "stack.h5") as handle:
        stack = np.asarray(handle["data"][()])
    with h5py.File(folder / "inputs" / "raw" / "true_shifts.h5") as handle:
        truth = np.asarray(handle["shifts"][()])
    methods: dict[str, Callable[[], Shifts]] = {
        BASELINE: lambda: baseline(stack, stack[0])[0],
        "pipeline, in memory": lambda: pipeline(stack, stack[0])[0],
        "pipeline job (python -m ...)": lambda: job(folder),
    }
    errors = {name: float(np.abs(call() - truth).max()) for name, call in methods.items()}
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):  # round robin, so a busy moment slows every method alike
        for name, call in methods.items():
            start, start_cpu = time.perf_counter(), cpu_seconds()
            call()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
    frames, height, width = stack.shape
    print(f"\nregistration of {frames} frames of {height} x {width} on one thread, {repeat} rounds")
    print(
        f"{'method':30} {'wall s':>7} {'cpu s':>7} {'frames/s':>9} {'x baseline':>11} "
        f"{'spread':>10} {'max error px':>13}"
    )
    for name in methods:
        ratios = [b / m for b, m in zip(cpu[BASELINE], cpu[name], strict=True)]
        print(
            f"{name:30} {median(wall[name]):7.3f} {median(cpu[name]):7.3f} "
            f"{frames / median(cpu[name]):9.1f} {median(ratios):11.2f} {spread(ratios):>10} "
            f"{errors[name]:13.3f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=512, help="frame height and width")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the subprocess's part
    args = parser.parse_args(argv)
    if args.measure:
        measure(args.measure, args.repeat)
        return
    with tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp:
        folder = Path(tmp)
        size = str(args.size)
        generate = ["generate", "--out", str(folder / "inputs" / "raw"), "--seed", str(args.seed)]
        generate += ["--frames", str(args.frames), "--height", size, "--width", size]
        subprocess.run([sys.executable, "-m", "pipelines", *generate], check=True, cwd=ROOT)
        child = [sys.executable, "-m", "benchmarks.bench_pipelines", "--measure", str(folder)]
        env = {**os.environ, **ONE_THREAD}
        subprocess.run([*child, "--repeat", str(args.repeat)], check=True, cwd=ROOT, env=env)


if __name__ == "__main__":
    main()

"""`python -m pipelines run JOB_TYPE ...` runs one job; `python -m pipelines generate ...` writes a
synthetic dataset (see `pipelines.core.synthetic`).

    python -m pipelines run JOB_TYPE --dataset D --inputs DIR --outputs DIR --options JSON \\
        [--split-idx K --num-splits N]

A job type is a top-level module of this package with `run(dataset, inputs, outputs, options)`
returning the exit status. After it ran, `environment.json` (`environment_{K}.json` for a split)
in the outputs folder records how (see `pipelines.core.environment`). Bad input or options exit
with status 2, an I/O failure or a missing package with 1, each as one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from pipelines.core import environment
from pipelines.core.common import PipelineError, output_name

PROG = "python -m pipelines"


class MissingPackageError(Exception):
    """A job type needs a package this Python does not have."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def job_types() -> list[str]:
    """The job types: top-level modules of this package whose names do not start with `_`."""
    found = pkgutil.iter_modules([str(Path(__file__).parent)])
    return sorted(m.name for m in found if not m.ispkg and not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        return _run(args)
    except (PipelineError, OSError, MissingPackageError) as exc:
        return _fail(exc)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run one job type")
    run.add_argument("job_type", choices=job_types())
    run.add_argument("--dataset", required=True)
    run.add_argument("--inputs", type=Path, required=True)
    run.add_argument("--outputs", type=Path, required=True)
    run.add_argument("--options", default="{}", help="job options as a JSON object")
    run.add_argument("--split-idx", type=int)
    run.add_argument("--num-splits", type=int, default=1)
    gen = sub.add_parser("generate", help="write a synthetic stack with known shifts")
    gen.add_argument("--out", type=Path, required=True, help="folder to write into")
    gen.add_argument("--frames", type=int, default=100)
    gen.add_argument("--height", type=int, default=128)
    gen.add_argument("--width", type=int, default=128)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--max-shift", type=float, default=4.0, help="pixels (default 4)")
    gen.add_argument("--noise", type=float, default=0.05, help="noise std / peak (default 0.05)")
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        options: Any = json.loads(args.options)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"--options is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise PipelineError("--options must be a JSON object")
    options["split_idx"] = args.split_idx
    options["num_splits"] = args.num_splits
    module = _job_module(args.job_type)
    args.outputs.mkdir(parents=True, exist_ok=True)
    job = {
        "job_type": args.job_type,
        "dataset": args.dataset,
        "split_idx": args.split_idx,
        "num_splits": args.num_splits,
        "options": dict(options),
    }
    started, clock = datetime.now().astimezone(), time.monotonic()
    try:
        code = int(module.run(args.dataset, args.inputs, args.outputs, options))
    except (PipelineError, OSError) as exc:
        code = _fail(exc)
    name = output_name("environment", ".json", args.split_idx)
    environment.write(args.outputs / name, job, started, time.monotonic() - clock, code)
    return code


def _job_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"pipelines.{name}")
    except ModuleNotFoundError as exc:
        raise MissingPackageError(
            f"{name} needs the package {exc.name}, which {sys.executable} does not have"
        ) from None


def _generate(args: argparse.Namespace) -> int:
    if args.frames < 1 or min(args.height, args.width) < 8:
        raise PipelineError("need --frames >= 1 and --height, --width >= 8")
    if args.max_shift < 0 or args.noise < 0:
        raise PipelineError("--max-shift and --noise must not be negative")
    try:
        from pipelines.core.synthetic import write_dataset
    except ModuleNotFoundError as exc:
        raise MissingPackageError(f"generate needs the package {exc.name}") from None
    paths = write_dataset(
        args.out, args.frames, args.height, args.width, args.seed, args.max_shift, args.noise
    )
    names = ", ".join(p.name for p in paths)
    print(f"generate: {args.frames} frames of {args.height} x {args.width} -> {args.out} ({names})")
    return 0


def _fail(exc: Exception) -> int:
    """Report `exc` as one line on stderr; 2 for bad input or options, else 1."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2 if isinstance(exc, PipelineError) else 1


if __name__ == "__main__":
    sys.exit(main())

"""`python -m pipelines run JOB_TYPE --dataset D --inputs DIR --outputs DIR --options JSON`."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

JOB_TYPES = ("file_stats", "selftest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one job type")
    run.add_argument("job_type", choices=JOB_TYPES)
    run.add_argument("--dataset", required=True)
    run.add_argument("--inputs", type=Path, required=True)
    run.add_argument("--outputs", type=Path, required=True)
    run.add_argument("--options", default="{}", help="job options as a JSON object")
    run.add_argument("--split-idx", type=int)
    run.add_argument("--num-splits", type=int, default=1)
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    if not isinstance(options, dict):
        parser.error("--options must be a JSON object")
    options["split_idx"] = args.split_idx
    options["num_splits"] = args.num_splits
    args.outputs.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"pipelines.{args.job_type}")
    code: int = module.run(args.dataset, args.inputs, args.outputs, options)
    return code


if __name__ == "__main__":
    sys.exit(main())

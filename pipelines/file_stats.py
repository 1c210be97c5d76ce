"""`file_stats`: size, SHA-256 and line count of every input file, as JSON.

Splittable: split `k` of `n` takes every n-th file starting at k and writes
`file_stats_{k}.json`; unsplit runs write `file_stats.json`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

INTERFACE = {
    "help": "size, SHA-256 and line count of each input file",
    "outputs": ["file_stats.json"],
    "options": {
        "sleep_seconds": {
            "type": "float",
            "default": 0,
            "help": "pause first (to watch a job run)",
        },
    },
    "resources": {"time": "00:10:00", "mem": "1G"},
}


def describe(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    lines = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            lines += block.count(b"\n")
    return {"size": path.stat().st_size, "sha256": digest.hexdigest(), "lines": lines}


def run(dataset: str, inputs: Path, outputs: Path, options: dict[str, Any]) -> int:
    files = sorted(p for p in inputs.rglob("*") if p.is_file())
    split, splits = options.get("split_idx"), int(options.get("num_splits") or 1)
    if split is not None:
        files = files[split::splits]
    time.sleep(float(options.get("sleep_seconds") or 0))
    stats = {str(p.relative_to(inputs)): describe(p) for p in files}
    name = "file_stats.json" if split is None else f"file_stats_{split}.json"
    (outputs / name).write_text(json.dumps({"dataset": dataset, "files": stats}, indent=2))
    print(f"file_stats: {len(stats)} file(s) of dataset {dataset} -> {outputs / name}")
    return 0

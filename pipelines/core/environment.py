"""What a job ran with, written next to its outputs as `environment.json`.

Format (one JSON object): `job_type`, `dataset`, `split_idx` (null when unsplit), `num_splits`,
`options` (as the job got them), `exit_code`, `started_at` (local time with its UTC offset, ISO
8601), `seconds` (wall time of the run), `host`, `platform`, `python` {`version`,
`implementation`, `executable`}, `packages` {`numpy`, `scipy`, `h5py`: the version the job
imported, else the one installed, else null} and `hdf5` (the HDF5 library of the h5py the job
imported, else null) and `code` (the folder the `pipelines` package ran from: for a job of a
committed version, labctl's copy of that commit, `<scratch>/code/<commit>/pipelines`). A split
writes `environment_{split_idx}.json` instead.
"""

from __future__ import annotations

import json
import platform
import socket
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("numpy", "scipy", "h5py")


def describe() -> dict[str, Any]:
    """Host, Python and package versions of this process."""
    h5py = sys.modules.get("h5py")
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": {name: _version(name) for name in PACKAGES},
        "hdf5": h5py.version.hdf5_version if h5py is not None else None,
        "code": str(Path(__file__).resolve().parents[1]),
    }


def write(
    path: Path, job: dict[str, Any], started: datetime, seconds: float, exit_code: int
) -> None:
    """Write the job's description, this process's environment and how the run ended to `path`."""
    report = {
        **job,
        "exit_code": exit_code,
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        **describe(),
    }
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def _version(name: str) -> str | None:
    module = sys.modules.get(name)
    if module is not None:
        return str(module.__version__)
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

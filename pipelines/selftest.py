"""`selftest`: checks that a cluster runs the lab's code; reports the environment it ran in.

Options: `sleep_seconds` (to watch a job run, or overrun its time), `hold_mb` (memory to hold
meanwhile, to overrun its --mem) and `exit_code` (to see how a failing job is reported end to
end).
"""

from __future__ import annotations

import json
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

INTERFACE = {
    "help": "check that a cluster runs the lab's code",
    "outputs": ["selftest.json"],
    "options": {
        "sleep_seconds": {
            "type": "float",
            "default": 0,
            "help": "pause first (to watch a job run)",
        },
        "hold_mb": {"type": "int", "default": 0, "help": "megabytes to hold while pausing"},
        "exit_code": {"type": "int", "default": 0, "help": "exit status to end with"},
    },
}


def run(dataset: str, inputs: Path, outputs: Path, options: dict[str, Any]) -> int:
    held = bytearray(int(options.get("hold_mb") or 0) << 20)
    held[::4096] = b"x" * len(held[::4096])  # touch every page: resident, not just reserved
    time.sleep(float(options.get("sleep_seconds") or 0))
    del held
    report = {
        "dataset": dataset,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "inputs": sorted(str(p.relative_to(inputs)) for p in inputs.rglob("*") if p.is_file()),
    }
    (outputs / "selftest.json").write_text(json.dumps(report, indent=2))
    code = int(options.get("exit_code") or 0)
    print(f"selftest on {report['host']} (python {report['python']}): exit {code}", file=sys.stderr)
    return code

"""`sacct --parsable2` records and SLURM's units, as `TaskUsage`: pure text in, values out.

sacct prints one line for a job (or array task) and one for each of its steps (`138.batch`,
`138_2.extern`, `138.0`); the job's line has the state, the times and what it asked for, the
steps' lines have the memory they used. Times come as epoch seconds (`SLURM_TIME_FORMAT=%s`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from labctl.errors import LabctlError
from labctl.model.job import TaskUsage

SACCT_FIELDS = (
    "JobID",
    "State",
    "ExitCode",
    "ElapsedRaw",
    "TotalCPU",
    "AllocCPUS",
    "MaxRSS",
    "ReqMem",
    "NNodes",
    "Submit",
    "Start",
    "End",
    "NodeList",
)
SACCT_FORMAT = ",".join(SACCT_FIELDS)
"""`sacct --format`: job id, state (`CANCELLED by 1001`), `exit:signal`, then the usage."""

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)([cn]?)")
_DURATION = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")


class SacctError(LabctlError):
    """sacct printed a record we cannot read."""


def size_bytes(text: str, unit: str) -> tuple[int, str] | None:
    """A SLURM size in bytes, with its `c` (per CPU) or `n` (per node) suffix if any:
    MaxRSS `316992K` (K when bare), ReqMem `4000M`, `2G`, `4000Mc` (before 21.08); None if empty."""
    if text in ("", "0n", "0c"):
        return None
    match = _SIZE.fullmatch(text)
    if match is None:
        raise SacctError(f"unrecognised SLURM size {text!r}")
    number, suffix, per = match.groups()
    return int(float(number) * _UNITS[suffix or unit]), per


def duration_seconds(text: str) -> float | None:
    """TotalCPU and Elapsed: `MM:SS.mmm`, `HH:MM:SS`, `D-HH:MM:SS`; None if empty."""
    if not text:
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        raise SacctError(f"unrecognised SLURM duration {text!r}")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def _lenient(req_mem: str) -> tuple[int, str] | None:
    """ReqMem, or None where sacct prints none we can read: slurmdbd was seen to print `16?`
    for a job it had just been told about. Usage is an extra; it never stops a job's tracking."""
    try:
        return size_bytes(req_mem, "M")
    except SacctError:
        return None


def _when(text: str) -> dt.datetime | None:
    """An epoch-seconds time; None for `Unknown`/`None` (not started or not ended yet)."""
    return dt.datetime.fromtimestamp(int(text), dt.UTC) if text.isdigit() else None


@dataclass
class SacctRecord:
    """One job or array task: its own line, and the largest MaxRSS of its steps."""

    fields: dict[str, str]
    max_rss: int | None = None

    @property
    def job_id(self) -> str:
        return self.fields["JobID"]

    @property
    def state(self) -> str:
        return self.fields["State"]

    @property
    def exit_code(self) -> str:
        return self.fields["ExitCode"]

    def usage(self, task: str, exit_code: int | None) -> TaskUsage:
        """What this record says the finished job or task `task` used."""
        f = self.fields
        cpus = int(f["AllocCPUS"]) if f["AllocCPUS"].isdigit() else 1
        nodes = int(f["NNodes"]) if f["NNodes"].isdigit() else 1
        asked = _lenient(f["ReqMem"])
        req_mem = None
        if asked is not None:
            req_mem = asked[0] * {"c": cpus, "n": nodes}.get(asked[1], 1)
        return TaskUsage(
            task=task,
            state=f["State"],
            exit_code=exit_code,
            elapsed_s=float(f["ElapsedRaw"]) if f["ElapsedRaw"].isdigit() else 0.0,
            cpu_s=duration_seconds(f["TotalCPU"]),
            cpus=cpus,
            max_rss_bytes=self.max_rss,
            req_mem_bytes=req_mem,
            submit=_when(f["Submit"]),
            start=_when(f["Start"]),
            end=_when(f["End"]),
            nodes="" if f["NodeList"].startswith("None") else f["NodeList"],
        )


def read_sacct(text: str) -> list[SacctRecord]:
    """The records of `sacct --parsable2 --noheader --format=SACCT_FORMAT`, steps folded in."""
    records: dict[str, SacctRecord] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) != len(SACCT_FIELDS):
            raise SacctError(f"expected {len(SACCT_FIELDS)} fields from sacct, got {line!r}")
        fields = dict(zip(SACCT_FIELDS, values, strict=True))
        job_id, dot, _ = fields["JobID"].partition(".")
        if not dot:
            records[job_id] = SacctRecord(fields)
            continue
        record = records.get(job_id)
        if record is None:
            raise SacctError(f"sacct printed step {fields['JobID']!r} before its job")
        rss = size_bytes(fields["MaxRSS"], "K")
        if rss is not None and (record.max_rss is None or rss[0] > record.max_rss):
            record.max_rss = rss[0]
    return list(records.values())

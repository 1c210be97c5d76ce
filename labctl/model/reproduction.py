"""A job's results, and what a rerun of it (`labctl rerun`) reproduces and how it came out:
parts of the queue document (`labctl.model.job`)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)


class ResultFile(_Part):
    name: str
    path: str = ""
    size: int
    sha256: str


class RerunOf(_Part):
    """What a rerun (`labctl rerun`) reproduces: the job it reruns, the results that job
    recorded, and whether the watchdog is to compare its own results with them."""

    job_id: str
    compare: bool = False
    rtol: float = Field(default=1e-6, ge=0)  # HDF5 datasets equal within this relative tolerance
    results: list[ResultFile] = Field(default_factory=list)  # the original's
    follow_up: RerunOf | None = None  # a split job's: what the merge queued after it reruns


class Match(StrEnum):
    """How a rerun's output compares with the original's."""

    IDENTICAL = "identical"  # the same bytes
    EQUIVALENT = "equal within tolerance"  # HDF5 whose datasets agree, though the bytes differ
    DIFFERENT = "different"
    MISSING = "missing"  # one of the two runs has no such output


class FileComparison(_Part):
    name: str
    match: Match
    original_size: int | None = None
    rerun_size: int | None = None
    note: str = ""  # for HDF5: which dataset differs, or why the files could not be read

    @property
    def line(self) -> str:
        """`registration.h5: equal within tolerance (4096 / 4100 bytes; ...)`."""
        sizes = " / ".join(
            "-" if s is None else str(s) for s in (self.original_size, self.rerun_size)
        )
        return f"{self.name}: {self.match} ({sizes} bytes" + (
            f"; {self.note})" if self.note else ")"
        )


class Reproduction(_Part):
    """The verdict of comparing a rerun's outputs with its original's, kept on both jobs."""

    original: str
    rerun: str
    match: Match  # the worst of the files'
    files: list[FileComparison] = Field(default_factory=list)
    at: dt.datetime

    @property
    def differing(self) -> list[str]:
        return [f.name for f in self.files if f.match in (Match.DIFFERENT, Match.MISSING)]

    @property
    def line(self) -> str:
        """`rerun j2 of j1: identical (3 files)`, naming the files that differ."""
        count = f"{len(self.files)} file" + ("" if len(self.files) == 1 else "s")
        told = f"rerun {self.rerun} of {self.original}: {self.match} ({count})"
        return told + (f"; differ: {', '.join(self.differing)}" if self.differing else "")

    @property
    def lines(self) -> list[str]:
        """Its `line`, then a line per file."""
        return [self.line, *(file.line for file in self.files)]

"""A cluster's scheduler settings: where finished jobs are accounted, how many jobs the watchdog
may have submitted there, and how often it resubmits a job SLURM ended for reasons of its own."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from labctl.settings import Settings


class SchedulerPolicy(Settings):
    """The scheduler settings of a `clusters:` entry (see ClusterConfig)."""

    accounting: Literal["slurmdbd", "jobcomp"] = Field(
        default="slurmdbd", description="where sacct reads finished jobs: slurmdbd or jobcomp log"
    )
    max_submitted: int | None = Field(
        default=None,
        ge=1,
        description="jobs (each array task counts) the watchdog keeps submitted here at most",
    )
    resubmit_limit: int = Field(
        default=2,
        ge=0,
        le=10,
        description="automatic resubmissions of a job that timed out, ran out of memory, lost "
        "its node or was preempted",
    )

"""Where each result of a dataset came from: job, code version, options, inputs, who ran it."""

from __future__ import annotations

from typing import Any

from labctl.catalog.experiments import get_entry
from labctl.damaged import Listing
from labctl.db import Database
from labctl.jobs.queue import all_jobs, read_all, where
from labctl.model.states import JobState


def provenance(db: Database, dataset: str) -> Listing[dict[str, Any]]:
    """One record per completed job of `dataset`, oldest first, and its damaged jobs."""
    get_entry(db, dataset)  # a clear error for an unknown or malformed dataset id
    completed = where(JobState.COMPLETED, dataset=dataset)
    found = read_all(all_jobs(db, completed, sort=[("created_at", 1)]))
    jobs = [job.doc() for job in found.items]
    records = [
        {
            "job_id": job["job_id"],
            "job_type": job["job_type"],
            "user": job["user"],
            "cluster": job["compute_cluster"],
            "completed_at": job["history"][-1]["at"] if job["history"] else job["updated_at"],
            "pipelines": job.get("pipelines"),
            "options": job["job_options"],
            "inputs": job.get("input_checksums", []),
            "outputs": job.get("results", []),
            "environment": job.get("environment"),
            "scheduler_job_id": (job.get("scheduler") or {}).get("job_id"),
            "rerun_of": (job.get("rerun") or {}).get("job_id"),
            "reproduction": job.get("reproduction"),
        }
        for job in jobs
    ]
    return Listing(records, found.damaged)

"""A config with clusters and job types, and a dataset with real files, for job tests."""

from __future__ import annotations

from pathlib import Path

from labctl.config import ClusterConfig, Config, JobTypeConfig, OptionSpec, Resources
from labctl.db import Database
from labctl.experiments import log_entries

DATASET = "20211215_093527"


def job_config(base: Config, scratch: Path, **clusters: ClusterConfig) -> Config:
    """`base` plus a `local` cluster (process scheduler) and the pipelines' job types."""
    return base.model_copy(
        update={
            "clusters": {
                "local": ClusterConfig(type="local", scratch=str(scratch), scheduler="process"),
                **clusters,
            },
            "job_types": {
                "file_stats": JobTypeConfig(
                    entry="file_stats",
                    outputs=["file_stats.json"],
                    options={"sleep_seconds": OptionSpec(type="float", default=0)},
                    resources=Resources(time="00:10:00", mem="1G"),
                ),
                "file_stats_split": JobTypeConfig(
                    entry="file_stats",
                    outputs=["file_stats_{split_idx}.json"],
                    splittable=True,
                ),
                "selftest": JobTypeConfig(
                    entry="selftest",
                    outputs=["selftest.json"],
                    options={
                        "sleep_seconds": OptionSpec(type="float", default=0),
                        "exit_code": OptionSpec(type="int", default=0),
                    },
                ),
            },
        }
    )


def dataset_with_files(db: Database, config: Config, root: Path, dataset: str = DATASET) -> Path:
    """Log `dataset` with raw and processed folders holding a few files; return its root."""
    raw, processed = root / "raw", root / "processed"
    raw.mkdir(parents=True)
    processed.mkdir(parents=True)
    (raw / "fl_a.roli").write_bytes(b"a" * 1000)
    (raw / "fl b $(x).roli").write_bytes(b"b" * 2000)
    (processed / "phase.h5").write_bytes(b"p" * 3000)
    fields = {"user": "charlie", "data_raw_path": str(raw), "data_path": str(processed)}
    log_entries(db, config, [(dataset, fields)])
    return root

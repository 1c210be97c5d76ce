"""The Python API, after the lab's Julia API: `dbquery` returns a table, `dblog` adds an entry.

    from labctl import dbquery
    df = dbquery(["data_raw_path", "runclass.id"], filter={"user": "charlie"})

Each call reads the configuration (`config=` path, else the usual lookup) and opens the database
for its duration, so scripts and notebooks need no set-up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from labctl.catalog.experiments import log_entries, query
from labctl.catalog.fields import check_field_name, flatten, get_dotted
from labctl.catalog.query import check_filter, parse_sort
from labctl.config import Config, load_config
from labctl.db import Database, connect
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest, submit_job


@contextmanager
def _session(config: Config | Path | str | None) -> Iterator[tuple[Config, Database]]:
    cfg = config if isinstance(config, Config) else load_config(Path(config) if config else None)
    with connect(cfg.database) as db:
        yield cfg, db


def dbquery(
    fields: Sequence[str] = (),
    filter: Mapping[str, Any] | None = None,
    *,
    sort: Sequence[str] = (),
    limit: int = 0,
    config: Config | Path | str | None = None,
) -> pd.DataFrame:
    """Experiments matching `filter` as a DataFrame with one column per dotted field.

    With no `fields`, every field found is a column. `filter` maps dotted field names to values
    or to `{"$gt": ...}`-style comparisons; `sort` takes names, `-name` for descending.
    """
    names = [check_field_name(f) for f in fields]
    with _session(config) as (_, db):
        docs = query(db, names, check_filter(dict(filter or {})), parse_sort(sort), limit)
    if names:
        return pd.DataFrame([[get_dotted(d, f) for f in names] for d in docs], columns=names)
    return pd.DataFrame([flatten(d) for d in docs])


def dblog(
    dataset: str,
    fields: Mapping[str, Any] | None = None,
    *,
    update: bool = False,
    config: Config | Path | str | None = None,
    **more: Any,
) -> dict[str, Any]:
    """Log (or with `update=True` change) one experiment; return it as stored.

    Fields come as a mapping with dotted names (`{"runclass.id": "ARB"}`) and/or keywords.
    """
    with _session(config) as (cfg, db):
        entry = flatten({**dict(fields or {}), **more})
        return log_entries(db, cfg, [(dataset, entry)], update=update)[0]


def dbqueue_job(
    dataset: str,
    compute_cluster: str,
    job_type: str,
    *,
    user: str | None = None,
    data_transfer_await: bool = False,
    datafiles: Sequence[str] = (),
    datarawfiles: Sequence[str] = (),
    job_options: Mapping[str, Any] | None = None,
    force: bool = False,
    allow_dirty: bool = False,
    config: Config | Path | str | None = None,
) -> str:
    """Queue an analysis job, as `labctl submit` does; return its job id."""
    request = JobRequest(
        dataset=dataset,
        compute_cluster=compute_cluster,
        job_type=job_type,
        datafiles=tuple(datafiles),
        datarawfiles=tuple(datarawfiles),
        job_options=dict(job_options or {}),
        data_transfer_await=data_transfer_await,
        user=user,
        allow_dirty=allow_dirty,
    )
    with _session(config) as (cfg, db):
        return str(submit_job(db, cfg, request, force=force)["job_id"])


def dbjob(job_id: str, *, config: Config | Path | str | None = None) -> dict[str, Any]:
    """One job's queue entry: state, history, transfer progress, SLURM id, results."""
    with _session(config) as (_, db):
        return get_job(db, job_id)

"""The Python API, after the lab's Julia API: `dbquery` returns a table, `dblog` adds an entry.

    from labctl import dbquery
    df = dbquery(["data_raw_path", "runclass.id"], filter={"user": "charlie"})

Each call reads the configuration (`config=` path, else the usual lookup), so scripts and
notebooks need no set-up. With `service:` in it, every call goes to the labctl service with the
member's token, and acts as that member (see `labctl.access.lab`); otherwise to the database.

The database is opened once per database config (and thread: the embedded store's files may not
change threads) and kept until the process exits or the thread calls `close_connections()`. Kept
is safe: the embedded store takes its file lock per operation, not per connection, so other
processes still interleave with this one, and each sees their writes.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from labctl.access import open_lab
from labctl.access.lab import Lab, Query
from labctl.catalog import Entry
from labctl.catalog.fields import check_field_name, flatten, get_dotted
from labctl.catalog.query import result_columns
from labctl.config import Config, DatabaseConfig, load_config
from labctl.db import Database, connect
from labctl.jobs.submit import JobRequest

_Key = tuple[int, int, DatabaseConfig]
_connections: dict[_Key, Database] = {}


def _database(config: DatabaseConfig) -> Database:
    """This process's (and thread's) connection to the configured store, opened on first use.
    A forked child opens its own: it must not share the parent's lock file or sockets."""
    key = (os.getpid(), threading.get_ident(), config)
    if key not in _connections:
        _connections[key] = connect(config)
    return _connections[key]


@atexit.register
def close_connections() -> None:
    """Close the connections this thread keeps (they open again when next needed); at exit,
    those of the main thread. SQLite refuses to close another thread's: the operating system
    closes those files when the process ends, every write of theirs already committed."""
    mine = (os.getpid(), threading.get_ident())
    for key in [key for key in _connections if key[:2] == mine]:
        _connections.pop(key).close()


def _lab(config: Config | Path | str | None) -> Lab:
    """The lab of the config (as given, or read from a path or the usual lookup)."""
    cfg = config if isinstance(config, Config) else load_config(Path(config) if config else None)
    return open_lab(cfg, lambda: _database(cfg.database))


def dbquery(
    fields: Sequence[str] = (),
    filter: Mapping[str, Any] | None = None,
    *,
    where: Sequence[str] = (),
    since: str | None = None,
    until: str | None = None,
    sort: Sequence[str] = (),
    limit: int = 0,
    config: Config | Path | str | None = None,
) -> pd.DataFrame:
    """Experiments matching `filter` as a DataFrame with one column per dotted field.

    The dataset id is always the first column; with no `fields`, every field found is one.
    `filter` maps dotted field names to values or to `{"$gt": ...}`-style comparisons; `where`
    takes `labctl query --where` conditions and `since`/`until` dates, all joined with AND;
    `sort` takes names, `-name` for descending. A field no entry has is refused with the names
    closest to it.
    """
    names = [check_field_name(f) for f in fields]
    found = Query(names, where, since, until, dict(filter or {}), sort, limit)
    docs = _lab(config).query(found)
    if names:
        columns = result_columns(names)
        return pd.DataFrame([[get_dotted(d, f) for f in columns] for d in docs], columns=columns)
    return pd.DataFrame([flatten(d) for d in docs])


def dblog(
    dataset: str,
    fields: Mapping[str, Any] | None = None,
    *,
    update: bool = False,
    config: Config | Path | str | None = None,
    **more: Any,
) -> Entry:
    """Log (or with `update=True` change) one experiment; return it as stored.

    Fields come as a mapping with dotted names (`{"runclass.id": "ARB"}`) and/or keywords.
    """
    entry = flatten({**dict(fields or {}), **more})
    return _lab(config).log([(dataset, entry)], update=update)[0]


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
    """Queue an analysis job, as `labctl submit` does; return its job id. Through the service,
    the job is always the token's member's (`user` is for the lab server's own scripts)."""
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
    return _lab(config).submit(request, force=force).job_id


def dbjob(job_id: str, *, config: Config | Path | str | None = None) -> dict[str, Any]:
    """One job's queue entry: state, history, transfer progress, SLURM id, results."""
    return _lab(config).job(job_id).doc()


def dbrerun_job(
    job_id: str,
    *,
    compute_cluster: str | None = None,
    allow_changed_inputs: bool = False,
    compare: bool = False,
    config: Config | Path | str | None = None,
) -> str:
    """Queue a completed job again as it was recorded, as `labctl rerun` does; return the
    rerun's job id (its verdict, once compared, is on `dbjob(id)["reproduction"]`)."""
    from labctl.jobs.rerun import RerunRequest

    request = RerunRequest(
        compute_cluster=compute_cluster, allow_changed_inputs=allow_changed_inputs, compare=compare
    )
    return _lab(config).rerun(job_id, request).job_id

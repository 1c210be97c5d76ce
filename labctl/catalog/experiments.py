"""Operations on the `data` collection: log, update, query and show experiments."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from labctl.catalog import Entry
from labctl.catalog.fields import (
    MANAGED_FIELDS,
    check_update,
    data_json_schema,
    flatten,
    get_dotted,
    new_data_entry,
    parse_dataset_id,
    update_of,
)
from labctl.catalog.query import filter_fields
from labctl.catalog.rights import Actor, check_change, check_new
from labctl.catalog.storable import check_size
from labctl.clock import utcnow
from labctl.config import Config
from labctl.db import Database, Filter
from labctl.errors import DuplicateError, NotFoundError, ValidationError
from labctl.limits import ANSWER_BYTES

NewEntry = tuple[str, Mapping[str, Any]]
"""A dataset and the fields to log for it."""
# The newest entries whose fields a "did you mean" chooses from.
SAMPLED_ENTRIES = 1000


def prepare_schema(db: Database, config: Config) -> None:
    """Make MongoDB enforce the configured required fields too."""
    db.set_validator("data", data_json_schema(config.data))


def log_entries(
    db: Database,
    config: Config,
    entries: Sequence[NewEntry],
    *,
    update: bool = False,
    actor: Actor | None = None,
) -> list[Entry]:
    """Store new experiments (or, with `update`, change existing ones); return what is stored.

    Every entry is validated, and checked for existence, for `actor`'s rights (see
    catalog/rights.py; None: whoever holds the database credential, as `config.user`) and for
    being storable (as it will be, for an update), before anything is written, so one bad entry
    in a batch leaves the database untouched.
    """
    actor = actor or Actor(config.user, admin=True)
    ids = [dataset for dataset, _ in entries]
    for dataset in ids:
        parse_dataset_id(dataset)
    repeated = sorted({d for d in ids if ids.count(d) > 1})
    if repeated:
        raise ValidationError(f"dataset(s) given twice: {', '.join(repeated)}")
    now = utcnow()
    existing = {d["dataset"]: d for d in db.data.find({"dataset": {"$in": ids}})}
    if update:
        missing = [d for d in ids if d not in existing]
        if missing:
            raise NotFoundError(f"no dataset {', '.join(missing)} to update; log it first")
        changes = [(d, update_of(fields, config.data, config.user, now)) for d, fields in entries]
        for dataset, change in changes:
            check_change(actor, existing[dataset], change["$set"], config.data)
            check_update(existing[dataset], change)
        for dataset, change in changes:
            db.data.update({"dataset": dataset}, change)
    else:
        if existing:
            raise DuplicateError(
                f"dataset(s) {', '.join(sorted(existing))} already logged; use --update to change"
            )
        docs = [new_data_entry(d, f, config.data, config.user, now) for d, f in entries]
        for doc in docs:
            check_new(actor, doc, config.data)
        _insert_all_or_none(db, docs)
    return _without_id(db.data.find({"dataset": {"$in": ids}}, sort=[("dataset", 1)]))


def _insert_all_or_none(db: Database, docs: list[Entry]) -> None:
    """Insert a batch; if another writer logged one of the ids meanwhile, undo this batch."""
    try:
        db.data.insert_many(docs)
    except DuplicateError:
        for doc in docs:
            db.data.delete({"dataset": doc["dataset"], "created_at": doc["created_at"]})
        raise


def _without_id(docs: list[Entry]) -> list[Entry]:
    for doc in docs:
        doc.pop("_id", None)
    return docs


def get_entry(db: Database, dataset: str) -> Entry:
    parse_dataset_id(dataset)
    doc = db.data.find_one({"dataset": dataset})
    if doc is None:
        raise NotFoundError(f"no dataset {dataset}")
    return _without_id([doc])[0]


def query(
    db: Database,
    fields: Sequence[str],
    filter: Filter,
    sort: Sequence[tuple[str, int]] = (),
    limit: int = 0,
    skip: int = 0,
    max_bytes: int | None = None,
) -> list[Entry]:
    """Entries matching `filter`, each with `dataset` and the requested dotted fields; a field
    asked for, compared with or sorted by that no entry has is refused (a typo would give
    empty answers), and so are answers larger than `max_bytes`."""
    projection = _outermost(["dataset", *fields]) if fields else None
    order = list(sort) or [("dataset", 1)]
    docs = db.data.find(filter, projection, order, limit=limit, skip=skip, max_bytes=max_bytes)
    _check_known(db, [*fields, *filter_fields(filter), *(name for name, _ in sort)], docs)
    return _without_id(docs)


def _check_known(db: Database, names: Sequence[str], found: Sequence[Entry]) -> None:
    """Each of `names` is a field of some entry (of those `found`, else of any), or one line
    names the closest fields that are. An empty collection has no fields to compare with."""
    unknown = [
        name
        for name in dict.fromkeys(names)
        if name.split(".")[0] not in (*MANAGED_FIELDS, "_id")
        and all(get_dotted(doc, name) is None for doc in found)
        and db.data.find_one({name: {"$exists": True}}, ["dataset"]) is None
    ]
    if not unknown:
        return
    known = {*MANAGED_FIELDS}
    for doc in db.data.find({}, sort=[("acquired_at", -1)], limit=SAMPLED_ENTRIES):
        known.update(name for name in flatten(doc) if name != "_id")
    if known == {*MANAGED_FIELDS}:
        return
    raise ValidationError("; ".join(_no_field(name, sorted(known)) for name in unknown))


def _no_field(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"no entry has a field {name}{hint}"


def _outermost(fields: Sequence[str]) -> list[str]:
    """The fields without those inside another one (`user.name` with `user`): a projection
    must not name both."""
    kept: list[str] = []
    for name in fields:
        if not any(name == k or name.startswith(k + ".") for k in kept):
            kept = [k for k in kept if not k.startswith(name + ".")] + [name]
    return kept


def query_page(
    db: Database,
    fields: Sequence[str],
    filter: Filter,
    sort: Sequence[tuple[str, int]],
    limit: int,
    skip: int = 0,
) -> tuple[int, list[Entry]]:
    """How many entries match `filter`, and one page of them (as `query` gives them) of at
    most `limits.ANSWER_BYTES`."""
    page = query(db, fields, filter, sort, limit=limit, skip=skip, max_bytes=ANSWER_BYTES)
    return db.data.count(filter), page


def record_result(db: Database, dataset: str, job_id: str, record: Mapping[str, Any]) -> None:
    """Note on the experiment what a job brought home (under `results.JOB_ID`); ValidationError
    if the entry would then be larger than an entry may be (every later edit would fail)."""
    entry = get_entry(db, dataset)
    check_size({**entry, "results": {**(entry.get("results") or {}), job_id: dict(record)}})
    db.data.update({"dataset": dataset}, {"$set": {f"results.{job_id}": dict(record)}})

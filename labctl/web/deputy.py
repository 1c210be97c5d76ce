"""What a member's watchdog may do through the service: `POST /api/v1/watchdog/db`.

A member's watchdog runs on their machine, as them, with their HPC account; it holds no database
credential, only their token, and sends each of its stages' collection operations here
(`labctl.servicedb`). Each is carried out only as far as it concerns that member:
- `queue` and `archive`: every filter is narrowed to the member's jobs. A new job is theirs and
  queued; what a job was asked to do (dataset, inputs, type, cluster, options, code) and whose it
  is never change; its state moves only as the state machine allows, from the state the write
  names; an archive copy is the queue's own, and is not changed after; a job leaves the queue
  only once archived.
- `data`: reading one entry at a time, as every member may (the REST API pages through many);
  the one write is `results.JOB` of one of the member's jobs being retrieved, on its dataset.
- `users`: the member's own public fields and notification settings.
- `meta`: the schema version, heartbeats and cluster sessions; only their own are written.
Filters take comparison and logic operators only (no `$where`, no `$regex`); values are plain
data. Anything else is refused (403 or 422), and nothing is written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from labctl.db import Database
from labctl.errors import PermissionDenied, ValidationError
from labctl.jobs.job import Job, MalformedJob
from labctl.jobs.states import JobState, check_transition
from labctl.limits import DEPTH
from labctl.servicedb import OPS, PATH, decode, encode
from labctl.stages.heartbeat import HEARTBEAT_KIND, SESSION_KIND, beat_key
from labctl.users import PUBLIC_FIELDS
from labctl.web.deps import ApiUser, state
from labctl.web.rest import _errors

router = APIRouter(prefix="/api/v1", responses=_errors(401, 403, 409, 422))
Doc = dict[str, Any]

FILTER_OPERATORS = {"$and", "$or", "$nor", "$in", "$nin", "$eq", "$ne", "$lt", "$lte", "$gt"}
FILTER_OPERATORS |= {"$gte", "$exists"}
# What a job was asked to do, and whose it is: set when it is queued, never by a watchdog.
REQUEST_FIELDS = {"job_id", "dataset", "user", "compute_cluster", "job_type", "datafiles"}
REQUEST_FIELDS |= {"datarawfiles", "job_options", "options_key", "pipelines", "created_at"}
REQUEST_FIELDS |= {"attempt", "parent_job"}
# Update operators, each with the job fields it may touch (None: any but the request's).
JOB_UPDATES: dict[str, set[str] | None] = {
    "$set": None,
    "$push": {"history"},
    "$inc": {"notices"},
    "$addToSet": {"notices"},
}
USER_FIELDS = [*PUBLIC_FIELDS, "notify_webhook"]
META_KINDS = ["schema", HEARTBEAT_KIND, SESSION_KIND]
_PLAIN = (str, int, float, bool, type(None))
MAX_DEPTH = 2 * DEPTH  # an operation's own nesting (filter, update) around a document's


@dataclass(frozen=True)
class Op:
    """One collection operation, as `labctl.servicedb` sends it."""

    collection: str
    name: str
    args: Doc

    @property
    def filter(self) -> Doc:
        return dict(self.args.get("filter") or {})


def parse(body: bytes) -> Op:
    """The operation `body` asks for, checked for form; ValidationError if it is malformed."""
    try:
        asked = decode(body)
    except ValueError as exc:
        raise ValidationError(f"not a watchdog operation: {exc}") from None
    if not isinstance(asked, dict) or not isinstance(asked.get("args"), dict):
        raise ValidationError("not a watchdog operation: give collection, op and args")
    op = Op(str(asked.get("collection")), str(asked.get("op")), asked["args"])
    if op.name not in OPS:
        raise ValidationError(f"unknown operation {op.name!r}")
    _check_plain(op.args)
    _check_args(op)
    _check_filter(op.filter)
    return op


_NEEDS = {"insert": "doc", "insert_many": "docs", "claim": "update", "update": "update"}
_NEEDS |= {"replace": "doc", "distinct": "field"}


def _check_args(op: Op) -> None:
    args = op.args
    if op.name in _NEEDS and _NEEDS[op.name] not in args:
        raise ValidationError(f"{op.name} needs {_NEEDS[op.name]}")
    if not isinstance(args.get("filter") or {}, dict):
        raise ValidationError("a filter is a mapping")
    counts = [args.get(name) or 0 for name in ("limit", "skip")]
    if not all(isinstance(n, int) and n >= 0 for n in counts):
        raise ValidationError("limit and skip are counts")
    fields = args.get("projection")
    if fields is not None and not (
        isinstance(fields, list) and all(isinstance(f, str) for f in fields)
    ):
        raise ValidationError("a projection is a list of field names")
    sort = args.get("sort") or []
    if not isinstance(sort, list) or not all(
        isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and s[1] in (1, -1)
        for s in sort
    ):
        raise ValidationError("a sort is a list of [field, 1 or -1]")


def _check_plain(value: Any, depth: int = 0) -> None:
    """Plain data and date-times only (no code, no regular expressions, no binary), nested at
    most `MAX_DEPTH` deep."""
    if depth > MAX_DEPTH:
        raise ValidationError(f"nested more than {MAX_DEPTH} deep")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, depth + 1)
            if not isinstance(key, str):
                raise ValidationError("field names are text")
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, depth + 1)
    elif type(value) not in (*_PLAIN, dt.datetime):  # exactly: bson's Code is a str
        raise ValidationError(f"a {type(value).__name__} cannot be sent to the watchdog's store")


def _check_filter(filter: Any) -> None:
    if isinstance(filter, dict):
        for key, value in filter.items():
            if key.startswith("$") and key not in FILTER_OPERATORS:
                raise PermissionDenied(f"the watchdog's filters may not use {key}")
            _check_filter(value)
    elif isinstance(filter, list):
        for item in filter:
            _check_filter(item)


def narrowed(db: Database, op: Op, member: str) -> Op:
    """`op` as far as it concerns `member`; PermissionDenied for what it may not do at all."""
    rule = RULES.get(op.collection)
    if rule is None:
        raise PermissionDenied(f"a watchdog has no business with {op.collection!r}")
    return rule(db, op, member)


def _with(op: Op, **args: Any) -> Op:
    return Op(op.collection, op.name, {**op.args, **args})


def _only(op: Op, field: str, value: Any) -> Op:
    """`op` with its filter narrowed to `field` matching `value` as well."""
    filter = op.filter
    both = {"$and": [filter, {field: value}]} if field in filter else {**filter, field: value}
    return _with(op, filter=both)


def _refuse(op: Op) -> PermissionDenied:
    return PermissionDenied(f"a watchdog may not {op.name} in {op.collection}")


def _jobs(db: Database, op: Op, member: str) -> Op:
    """queue and archive: the member's jobs only."""
    mine = _only(op, "user", member)
    if op.name in ("find", "find_one", "count", "distinct"):
        return mine
    if op.args.get("upsert"):
        raise _refuse(op)
    if op.collection == "queue" and op.name in ("update", "claim"):
        _check_job_update(op.filter, op.args.get("update"))
        return mine
    if op.collection == "queue" and op.name == "insert":
        _check_new_job(op.args.get("doc"), member)
        return op
    if op.collection == "queue" and op.name == "delete":
        job_id = op.filter.get("job_id")
        if not isinstance(job_id, str) or db.archive.find_one({"_id": job_id}) is None:
            raise PermissionDenied("a job leaves the queue only once it is in the archive")
        return mine
    if op.collection == "archive" and op.name in ("insert", "replace"):
        _check_archive_copy(db, op.args.get("doc"), member)
        return mine
    raise _refuse(op)


def _check_job_update(filter: Doc, update: Any) -> None:
    if not isinstance(update, dict) or not update:
        raise ValidationError("an update is a mapping of update operators")
    for operator, changes in update.items():
        if operator not in JOB_UPDATES or not isinstance(changes, dict):
            raise PermissionDenied(f"a watchdog may not use {operator} on a job")
        allowed = JOB_UPDATES[operator]
        for name in changes:
            root = name.split(".", 1)[0]
            if root in REQUEST_FIELDS or root not in Job.model_fields:
                raise PermissionDenied(f"a watchdog may not change a job's {root}")
            if allowed is not None and root not in allowed:
                raise PermissionDenied(f"a watchdog may not use {operator} on a job's {root}")
            if root == "status" and name != "status":
                raise PermissionDenied("a job's state is set whole")
    new = update.get("$set", {}).get("status")
    if new is not None:
        old = filter.get("status")
        if not isinstance(old, str):
            raise PermissionDenied("a job's state changes only from the state the write names")
        check_transition(_state(old), _state(new))


def _state(word: Any) -> JobState:
    try:
        return JobState(word)
    except ValueError:
        raise ValidationError(f"{word!r} is not a job state") from None


def _check_new_job(doc: Any, member: str) -> None:
    job = _job(doc)
    if job.user != member:
        raise PermissionDenied(f"a watchdog queues jobs for {member} only")
    if job.status is not JobState.QUEUED:
        raise PermissionDenied("a new job starts queued")


def _job(doc: Any) -> Job:
    if not isinstance(doc, dict):
        raise ValidationError("a job is a document")
    try:
        return Job.of(doc)
    except MalformedJob as exc:
        raise ValidationError(str(exc)) from None


def _check_archive_copy(db: Database, doc: Any, member: str) -> None:
    """An archive copy is that of one of the member's jobs as the queue holds it."""
    job = _job(doc)
    live = db.queue.find_one({"job_id": job.job_id, "user": member})
    if live is None or doc.get("_id") != job.job_id or _stored(live) != _stored(doc):
        raise PermissionDenied("an archive copy is the queue's own copy of the member's job")


def _stored(doc: Doc) -> Doc:
    """What a job's copy keeps of it: all but its key and the lease of the run moving it."""
    return {k: v for k, v in doc.items() if k not in ("_id", "owner", "lease_until")}


def _data(db: Database, op: Op, member: str) -> Op:
    """data: reading one entry at a time (the REST API pages through many); writing only the
    result record of a job of theirs being retrieved."""
    if op.name == "find_one":
        return op
    if op.name != "update" or op.args.get("upsert") or op.args.get("many"):
        raise _refuse(op)
    dataset = op.filter.get("dataset")
    update = op.args.get("update")
    if set(op.filter) != {"dataset"} or not isinstance(dataset, str):
        raise PermissionDenied("a watchdog writes to one dataset, named")
    if not isinstance(update, dict) or set(update) != {"$set"}:
        raise PermissionDenied("a watchdog only records results on a dataset")
    for name in update["$set"]:
        prefix, _, job_id = name.partition(".")
        mine = {"job_id": job_id, "user": member, "dataset": dataset}
        being_retrieved = {**mine, "status": str(JobState.RETRIEVING)}
        if prefix != "results" or db.queue.find_one(being_retrieved, ["job_id"]) is None:
            raise PermissionDenied(
                f"a watchdog records only results.JOB of a job of {member}'s being retrieved "
                "from that dataset"
            )
    return op


def _users(db: Database, op: Op, member: str) -> Op:
    """users: the member's own public fields and notification settings."""
    if op.name not in ("find", "find_one"):
        raise _refuse(op)
    asked = op.args.get("projection")
    fields = [f for f in asked if f in USER_FIELDS] if asked is not None else USER_FIELDS
    return _with(_only(op, "username", member), projection=fields)


def _meta(db: Database, op: Op, member: str) -> Op:
    """meta: reading the schema version, heartbeats and sessions; writing the member's own."""
    if op.name in ("find", "find_one", "count"):
        return _only(op, "kind", {"$in": META_KINDS})
    update = op.args.get("update")
    doc = update.get("$set") if isinstance(update, dict) and set(update) == {"$set"} else None
    if op.name != "update" or op.args.get("many") or not isinstance(doc, dict):
        raise _refuse(op)
    name = doc.get("stage") if doc.get("kind") == HEARTBEAT_KIND else doc.get("cluster")
    key = beat_key(str(doc.get("kind")), str(name), str(doc.get("host")), member)
    if doc.get("kind") not in META_KINDS[1:] or doc.get("user") != member:
        raise PermissionDenied(f"a watchdog writes only {member}'s heartbeats and sessions")
    if op.filter != {"key": key} or doc.get("key") != key:
        raise PermissionDenied(f"a watchdog writes only {member}'s heartbeats and sessions")
    return op


RULES = {"queue": _jobs, "archive": _jobs, "data": _data, "users": _users, "meta": _meta}


def execute(db: Database, op: Op) -> Any:
    """Carry out a checked operation on the service's own store."""
    collection = db[op.collection]
    args = op.args
    sort = [(field, way) for field, way in args.get("sort") or []]
    projection: Sequence[str] | None = args.get("projection")
    match op.name:
        case "insert":
            return collection.insert(args["doc"])
        case "insert_many":
            return collection.insert_many(args["docs"])
        case "find":
            limit, skip = args.get("limit") or 0, args.get("skip") or 0
            return collection.find(op.filter, projection, sort, limit, skip)
        case "find_one":
            return collection.find_one(op.filter, projection)
        case "claim":
            return collection.claim(op.filter, args["update"], sort)
        case "update":
            many, upsert = bool(args.get("many")), bool(args.get("upsert"))
            return collection.update(op.filter, args["update"], many=many, upsert=upsert)
        case "replace":
            return collection.replace(op.filter, args["doc"])
        case "delete":
            return collection.delete(op.filter)
        case "count":
            return collection.count(op.filter)
        case _:
            return collection.distinct(str(args["field"]), op.filter)


def serve(db: Database, body: bytes, member: str) -> bytes:
    """The answer to one watchdog operation `body`, carried out for `member`."""
    op = narrowed(db, parse(body), member)
    return encode({"result": execute(db, op)})


@router.post(PATH)
async def watchdog_db(request: Request, user: ApiUser) -> Response:
    """One collection operation of `user`'s watchdog (see the module's docstring)."""
    answer = await state(request).store.run(serve, await request.body(), user.username)
    return Response(answer, media_type="application/json")

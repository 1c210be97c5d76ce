"""The database seam: the only module that talks to a store.

Two backends speak the same pymongo collection API, so one small wrapper serves both:
- MongoDB through pymongo (production; replica-set URIs work unchanged);
- the embedded store (litemongo: SQLite files, no server). litemongo is not multi-process safe on
  its own, so every call holds an exclusive `flock` on the store's lock file for its duration.
  It holds password hashes, token digests and sessions: its folder is 0700, its files 0600.

MongoDB stops every query at `database.query_seconds` (`maxTimeMS`), also one whose client has
gone; the embedded store matches regular expressions with RE2, in time linear in the text.

The rest of labctl uses only `Database` and `Collection` below and the errors in `labctl.errors`.
pymongo is imported when a store is first used, not with this module (the command line's help
needs neither).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import ParseResult

from labctl.config import DatabaseConfig
from labctl.embedded import embedded_filter
from labctl.errors import (
    DatabaseError,
    DatabaseUnreachable,
    DuplicateError,
    QueryTimeout,
    ValidationError,
)
from labctl.private import FileLock, narrow_tree, private_dir

Doc = dict[str, Any]
Filter = Mapping[str, Any]
SortSpec = Sequence[tuple[str, int]]

_DUPLICATE_KEY = 11000  # MongoDB's error code for a unique index violation

INDEXES: dict[str, list[tuple[str, bool]]] = {
    "data": [("dataset", True), ("user", False), ("acquired_at", False)],
    "queue": [
        ("job_id", True),
        ("status", False),
        ("compute_cluster", False),
        ("dataset", False),
        ("owner", False),
        ("user", False),
        # The jobs stage looks for the few completed jobs whose scratch is not yet cleaned or
        # whose merge is not yet queued, cancelled jobs still to stop, and jobs with a notice
        # due; without these, it reads every finished job each run.
        ("scratch_cleaned", False),
        ("cleanup_pending", False),
        ("follow_up_pending", False),
        ("notify_at", False),
    ],
    # Finished jobs no stage works on any more (`labctl.jobs.queue.archive_settled`), keyed by
    # `_id` = job id: its own file on the embedded store, which the watchdog's stages never read,
    # so that their queue stays as small as the work in flight. No unique index but `_id`: on
    # the embedded store, checking one reads the whole collection on every insert.
    "archive": [("user", False), ("dataset", False), ("status", False)],
    "users": [("username", True)],
    "meta": [("key", True)],
}


@contextmanager
def _translate(where: str) -> Iterator[None]:
    """Turn driver errors into labctl's typed errors, each with one clear line."""
    import bson.errors
    import pymongo.errors

    try:
        yield
    except pymongo.errors.DuplicateKeyError as exc:
        key = (exc.details or {}).get("keyValue") or ""
        raise DuplicateError(f"{where}: duplicate key {key}".rstrip()) from None
    except pymongo.errors.BulkWriteError as exc:
        # insert_many reports a duplicate as a bulk error, not as DuplicateKeyError
        dups = [e for e in exc.details.get("writeErrors", []) if e.get("code") == _DUPLICATE_KEY]
        if not dups:
            raise DatabaseError(f"{where}: {str(exc).splitlines()[0]}") from None
        key = dups[0].get("keyValue") or ""
        raise DuplicateError(f"{where}: duplicate key {key}".rstrip()) from None
    except (pymongo.errors.ServerSelectionTimeoutError, pymongo.errors.ConnectionFailure):
        raise DatabaseUnreachable(f"{where}: lost the connection to the database") from None
    except pymongo.errors.ExecutionTimeout:
        raise QueryTimeout(
            f"{where}: the query ran out of time (database.query_seconds) and was stopped; "
            "narrow it, or simplify its regular expression"
        ) from None
    except pymongo.errors.PyMongoError as exc:
        raise DatabaseError(f"{where}: {str(exc).splitlines()[0]}") from None
    except sqlite3.Error as exc:  # the embedded store's files (disk full, corrupt file, ...)
        raise DatabaseError(f"{where}: {exc}") from None
    except (OverflowError, bson.errors.InvalidDocument) as exc:  # e.g. an int beyond 64 bits
        raise ValidationError(f"{where}: a value cannot be stored: {exc}") from None


class Collection:
    """A collection with labctl's small API; every result is materialised inside the lock, every
    query bounded by `max_ms` (MongoDB's `maxTimeMS`; None for the embedded store)."""

    def __init__(self, raw: Any, lock: FileLock | None, max_ms: int | None) -> None:
        self._raw = raw
        self._lock = lock
        self._max_ms = max_ms
        self._max_time = {"maxTimeMS": max_ms} if max_ms else {}
        self.name: str = raw.name

    def _guard(self) -> AbstractContextManager[None]:
        return self._lock.held() if self._lock else nullcontext()

    @contextmanager
    def _op(self) -> Iterator[None]:
        with self._guard(), _translate(self.name):
            yield

    def _filter(self, filter: Filter | None) -> Doc:
        return embedded_filter(filter or {}) if self._lock else dict(filter or {})

    def insert(self, doc: Doc) -> None:
        with self._op():
            self._raw.insert_one(dict(doc))

    def insert_many(self, docs: Sequence[Doc]) -> None:
        if docs:
            with self._op():
                self._raw.insert_many([dict(d) for d in docs], ordered=True)

    def find(
        self,
        filter: Filter | None = None,
        projection: Sequence[str] | None = None,
        sort: SortSpec | None = None,
        limit: int = 0,
        skip: int = 0,
        max_bytes: int | None = None,
    ) -> list[Doc]:
        """The matching documents; ValidationError once they are together larger than
        `max_bytes` as BSON (those read so far are dropped, the rest never read)."""
        proj = _projection(projection)
        with self._op():
            cursor = self._raw.find(self._filter(filter), proj, max_time_ms=self._max_ms)
            if sort:
                cursor = cursor.sort(list(sort))
            if skip:
                cursor = cursor.skip(skip)
            if limit:
                cursor = cursor.limit(limit)
            return list(cursor) if max_bytes is None else self._bounded(cursor, max_bytes)

    def _bounded(self, cursor: Any, max_bytes: int) -> list[Doc]:
        import bson

        docs, size = [], 0
        for doc in cursor:
            size += len(bson.encode(doc))
            if size > max_bytes:
                raise ValidationError(
                    f"{self.name}: the answer is larger than {max_bytes:,} bytes; "
                    "ask for fewer entries or fields"
                )
            docs.append(doc)
        return docs

    def find_one(self, filter: Filter, projection: Sequence[str] | None = None) -> Doc | None:
        with self._op():
            found: Doc | None = self._raw.find_one(
                self._filter(filter), _projection(projection), max_time_ms=self._max_ms
            )
            return found

    def claim(
        self, filter: Filter, update: Mapping[str, Any], sort: SortSpec | None = None
    ) -> Doc | None:
        """Atomically update the first matching document and return it as it is afterwards."""
        from pymongo import ReturnDocument

        with self._op():
            doc: Doc | None = self._raw.find_one_and_update(
                self._filter(filter),
                dict(update),
                sort=list(sort) if sort else None,
                return_document=ReturnDocument.AFTER,
            )
            return doc

    def update(
        self, filter: Filter, update: Mapping[str, Any], *, many: bool = False, upsert: bool = False
    ) -> int:
        """Apply `update` (inserting a document if none matches and `upsert`); return matches."""
        with self._op():
            method = self._raw.update_many if many else self._raw.update_one
            return int(method(self._filter(filter), dict(update), upsert=upsert).matched_count)

    def replace(self, filter: Filter, doc: Doc) -> int:
        """Replace the first matching document by `doc`; return how many matched."""
        with self._op():
            return int(self._raw.replace_one(self._filter(filter), dict(doc)).matched_count)

    def delete(self, filter: Filter) -> int:
        with self._op():
            return int(self._raw.delete_one(self._filter(filter)).deleted_count)

    def count(self, filter: Filter | None = None) -> int:
        with self._op():
            return int(self._raw.count_documents(self._filter(filter), **self._max_time))

    def distinct(self, field: str, filter: Filter | None = None) -> list[Any]:
        with self._op():
            return list(self._raw.distinct(field, self._filter(filter), **self._max_time))

    def create_index(self, field: str, *, unique: bool = False) -> None:
        from pymongo import ASCENDING

        with self._op():
            self._raw.create_index([(field, ASCENDING)], unique=unique)

    def index_fields(self) -> dict[str, bool]:
        """The single-field ascending indexes: field -> unique."""
        from pymongo import ASCENDING

        with self._op():
            info = self._raw.index_information()
        return {
            spec["key"][0][0]: bool(spec.get("unique"))
            for spec in info.values()
            if len(spec["key"]) == 1 and spec["key"][0][1] == ASCENDING
        }


def _projection(fields: Sequence[str] | None) -> dict[str, int] | None:
    if fields is None:
        return None
    return {"_id": 0, **dict.fromkeys(fields, 1)}


class Database:
    """The collections `data`, `queue` (jobs in flight), `archive` (finished jobs), `users` and
    `meta` (heartbeats, the schema version)."""

    def __init__(
        self, raw_db: Any, client: Any, lock: FileLock | None, where: str, max_ms: int | None
    ) -> None:
        self._raw_db = raw_db
        self._client = client
        self._lock = lock
        self._max_ms = max_ms
        self.where = where

    def __getitem__(self, name: str) -> Collection:
        return Collection(self._raw_db[name], self._lock, self._max_ms)

    @property
    def data(self) -> Collection:
        return self["data"]

    @property
    def queue(self) -> Collection:
        return self["queue"]

    @property
    def archive(self) -> Collection:
        return self["archive"]

    @property
    def users(self) -> Collection:
        return self["users"]

    @property
    def meta(self) -> Collection:
        return self["meta"]

    def ensure_indexes(self) -> None:
        """Create the missing indexes. Existing ones are left alone: on the embedded store,
        creating a unique index again reads every document to check it."""
        for name, indexes in INDEXES.items():
            existing = self[name].index_fields()
            for field, unique in indexes:
                if existing.get(field) != unique:
                    self[name].create_index(field, unique=unique)

    def hello(self) -> Doc | None:
        """The MongoDB server's read-only `hello` reply (replica set, primary, members), or None
        for the embedded store."""
        if self._lock is not None:
            return None
        with _translate("hello"):
            reply: Doc = self._client.admin.command("hello")
        return reply

    def set_validator(self, collection: str, json_schema: Doc) -> None:
        """Enforce a `$jsonSchema` on MongoDB; the embedded store validates in labctl only."""
        if self._lock is not None:
            return
        with _translate(collection):
            if collection not in self._raw_db.list_collection_names():
                self._raw_db.create_collection(collection)
            self._raw_db.command(
                "collMod",
                collection,
                validator={"$jsonSchema": json_schema},
                validationLevel="strict",
            )

    def close(self) -> None:
        self._client.close()
        if self._lock is not None:
            self._lock.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(config: DatabaseConfig) -> Database:
    """Open the configured store; fail within `timeout_seconds` naming the host if unreachable."""
    if config.embedded:
        return _connect_embedded(config)
    return _connect_mongo(config)


def _connect_embedded(config: DatabaseConfig) -> Database:
    import litemongo

    try:
        lock = FileLock(private_dir(config.path) / ".lock")
    except OSError as exc:
        raise DatabaseError(
            f"cannot open the embedded store at {config.path}: {exc.strerror}"
        ) from None
    # A plain string would be parsed as a URL: a '#' or '?' in the path would change the
    # database name or the directory. Pass the path alone.
    location = ParseResult("", "", str(config.path), "", "", "")
    try:
        with lock.held():
            client = litemongo.connect(location, tz_aware=True)
            db = Database(client[config.name], client, lock, f"embedded store {config.path}", None)
            db.ensure_indexes()
            narrow_tree(config.path / config.name)  # litemongo makes its files with the umask
    except (ValueError, sqlite3.Error, DatabaseError, OSError) as exc:
        lock.close()
        raise DatabaseError(f"cannot open the embedded store at {config.path}: {exc}") from None
    return db


def _hosts(uri: str) -> str:
    """The host list of a MongoDB URI, without credentials, for error messages."""
    return uri.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]


def _connect_mongo(config: DatabaseConfig) -> Database:
    import pymongo
    import pymongo.errors

    hosts = _hosts(config.uri)
    timeout_ms = int(config.timeout_seconds * 1000)
    try:
        client: pymongo.MongoClient[Doc] = pymongo.MongoClient(
            config.uri,
            tz_aware=True,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
        )
    except (pymongo.errors.ConfigurationError, ValueError) as exc:  # ValueError: e.g. a bad port
        raise DatabaseError(f"invalid MongoDB URI: {exc}") from None
    try:
        client.admin.command("ping")
    except pymongo.errors.ConnectionFailure:  # includes ServerSelectionTimeoutError
        client.close()
        raise DatabaseUnreachable(
            f"cannot reach MongoDB at {hosts} within {config.timeout_seconds:g} s"
        ) from None
    except pymongo.errors.PyMongoError as exc:  # e.g. authentication failed
        client.close()
        raise DatabaseError(f"MongoDB at {hosts}: {str(exc).splitlines()[0]}") from None
    max_ms = int(config.query_seconds * 1000)
    db = Database(client[config.name], client, None, f"MongoDB at {hosts}", max_ms)
    with _translate("indexes"):
        db.ensure_indexes()
    return db

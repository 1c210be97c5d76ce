"""The database seam's third backend: a member's watchdog reaching the store through the service.

On a member's machine there is no database credential, only their token. Their watchdog's
stages still call `Database` and `Collection` (`labctl.db`); here each call is sent, as it is,
to the service (`POST /api/v1/watchdog/db`), which carries it out only for the member whose
token it is (`labctl.web.deputy` says what it allows). This module speaks the small part of
pymongo's collection API that `Collection` uses, so `Database` wraps it as it wraps the others.

Documents travel as MongoDB's Extended JSON (relaxed), so that date-times come back as
date-times, exactly as stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labctl.config import Config
from labctl.db import Database
from labctl.errors import ConfigError, ServiceError
from labctl.settings import ServiceConfig

Doc = dict[str, Any]
OPS = {"insert", "insert_many", "find", "find_one", "claim", "update", "replace", "delete"}
OPS |= {"count", "distinct"}
PATH = "/watchdog/db"


def _options() -> Any:
    from bson import json_util

    return json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=dt.UTC)


def encode(value: Any) -> bytes:
    from bson import json_util

    return json_util.dumps(value, json_options=_options()).encode()


def decode(body: bytes) -> Any:
    """`body` as Extended JSON; ValueError if it is not."""
    from bson import json_util

    try:
        return json_util.loads(body, json_options=_options())
    except RecursionError:
        raise ValueError("nested too deeply") from None


@dataclass(frozen=True)
class _Outcome:
    """What pymongo's update, replace and delete return, as far as `Collection` reads it."""

    matched_count: int = 0
    deleted_count: int = 0


def _fields(projection: Mapping[str, int] | None) -> list[str] | None:
    """`Collection`'s projection (`{"_id": 0, field: 1, ...}`) back as its field list."""
    return None if projection is None else [k for k, on in projection.items() if on]


@dataclass
class _Cursor:
    """A `find` sent when it is first read, with the sort, skip and limit given by then."""

    collection: _Collection
    args: Doc
    _docs: list[Doc] | None = field(default=None, init=False)

    def sort(self, spec: Sequence[tuple[str, int]]) -> _Cursor:
        self.args["sort"] = [list(item) for item in spec]
        return self

    def skip(self, count: int) -> _Cursor:
        self.args["skip"] = count
        return self

    def limit(self, count: int) -> _Cursor:
        self.args["limit"] = count
        return self

    def __iter__(self) -> Iterator[Doc]:
        if self._docs is None:
            self._docs = self.collection.ask("find", **self.args)
        return iter(self._docs)


@dataclass
class _Collection:
    client: ServiceClient
    name: str

    def ask(self, op: str, **args: Any) -> Any:
        return self.client.ask(self.name, op, args)

    def insert_one(self, doc: Doc) -> None:
        self.ask("insert", doc=doc)

    def insert_many(self, docs: list[Doc], ordered: bool = True) -> None:
        self.ask("insert_many", docs=docs)

    def find(self, filter: Doc, projection: Mapping[str, int] | None, **_: Any) -> _Cursor:
        return _Cursor(self, {"filter": filter, "projection": _fields(projection)})

    def find_one(self, filter: Doc, projection: Mapping[str, int] | None, **_: Any) -> Doc | None:
        found: Doc | None = self.ask("find_one", filter=filter, projection=_fields(projection))
        return found

    def find_one_and_update(
        self, filter: Doc, update: Doc, sort: list[tuple[str, int]] | None, **_: Any
    ) -> Doc | None:
        sort_spec = [list(item) for item in sort or []]
        found: Doc | None = self.ask("claim", filter=filter, update=update, sort=sort_spec)
        return found

    def _update(self, filter: Doc, update: Doc, many: bool, upsert: bool) -> _Outcome:
        matched = self.ask("update", filter=filter, update=update, many=many, upsert=upsert)
        return _Outcome(matched_count=int(matched))

    def update_one(self, filter: Doc, update: Doc, upsert: bool = False) -> _Outcome:
        return self._update(filter, update, False, upsert)

    def update_many(self, filter: Doc, update: Doc, upsert: bool = False) -> _Outcome:
        return self._update(filter, update, True, upsert)

    def replace_one(self, filter: Doc, doc: Doc) -> _Outcome:
        return _Outcome(matched_count=int(self.ask("replace", filter=filter, doc=doc)))

    def delete_one(self, filter: Doc) -> _Outcome:
        return _Outcome(deleted_count=int(self.ask("delete", filter=filter)))

    def count_documents(self, filter: Doc, **_: Any) -> int:
        return int(self.ask("count", filter=filter))

    def distinct(self, key: str, filter: Doc, **_: Any) -> list[Any]:
        found: list[Any] = self.ask("distinct", field=key, filter=filter)
        return found

    def create_index(self, *_: Any, **__: Any) -> None:
        raise ConfigError("indexes are the service's to make: 'labctl db init' on the lab server")

    index_information = create_index


@dataclass
class ServiceClient:
    """Sends one collection operation at a time to the service, with the member's token."""

    service: ServiceConfig
    token: str

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self, name)

    def ask(self, collection: str, op: str, args: Doc) -> Any:
        from labctl.service import send

        body = encode({"collection": collection, "op": op, "args": args})
        answer = send(self.service, "POST", PATH, body, self.token)
        try:
            return decode(answer)["result"]
        except (ValueError, KeyError, TypeError):
            raise ServiceError(f"{self.service.url} did not answer as a labctl service") from None

    def close(self) -> None:
        """Nothing is held open between operations."""


def service_database(service: ServiceConfig, token: str) -> Database:
    """The store as a member's watchdog reaches it: through the service, as its token's owner."""
    client = ServiceClient(service, token)
    return Database(client, client, None, f"the labctl service at {service.url}", None)


def member_watchdog(config: Config, service: ServiceConfig) -> tuple[Database, Config]:
    """The store a member's watchdog works on through `service`, and `config` acting as the
    member whose token it holds (whatever its `user` says)."""
    from labctl.service import ServiceLab

    lab = ServiceLab.of(service)
    member = str(lab.whoami()["username"])
    return service_database(service, lab.token), config.model_copy(update={"user": member})

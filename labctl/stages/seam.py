"""What a watchdog may do to the store: twenty-two typed operations, each checked as an operation.

A watchdog's stages never send a query or a document: they send one of the operations of
`labctl.stages.ops` (claim a kind of work, move a job of theirs from the state they read it in,
record what they learnt, ...), with values the models validate. Each carries itself out for one
member (`LocalStore.member`): it selects only their jobs, changes only what a watchdog records
(`Progress`), moves a state only as the state machine allows, and builds every document itself.

The same code runs on both sides: `LocalStore` carries an operation out on a store it holds (the
lab server's watchdog, and the service on behalf of a member's);
`labctl.access.servicedb.ServiceStore` sends it to the service, which checks the token and runs
it in a `LocalStore` for the token's owner (`labctl.web.deputy`). So a member's
watchdog can do exactly what its own code does on a store it holds, for that member, and nothing
else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from labctl.config import Config
from labctl.db import Database
from labctl.errors import NotFoundError
from labctl.jobs.migrate import migrate_if_needed
from labctl.limits import DEPTH, WATCHDOG_IDS
from labctl.model.job import Job, JobRef

R = TypeVar("R")

Name = Annotated[str, Field(min_length=1, max_length=200)]
Note = Annotated[str, Field(max_length=10_000)]
# A run holding leases: host:pid:token (labctl.stages.runlock.new_owner)
Owner = Annotated[str, Field(min_length=1, max_length=300)]
LeaseSeconds = Annotated[float, Field(gt=0, le=7 * 86400)]
Ids = Annotated[list[Name], Field(max_length=WATCHDOG_IDS)]


@dataclass(frozen=True)
class LocalStore:
    """The operations carried out on a store held here, for `member` alone."""

    db: Database
    config: Config
    member: str

    @classmethod
    def of(cls, db: Database, config: Config) -> LocalStore:
        """The store as the watchdog of `config.user` works on it."""
        return cls(db, config, config.user)

    def run(self, op: Op[R]) -> R:
        return op.apply(self)

    def prepare(self) -> None:
        """Upgrade the store to this labctl's schema if it is older."""
        migrate_if_needed(self.db, self.config)

    def own(self, ref: JobRef) -> Job | None:
        """The member's job in flight that `ref` names, while still in the state `ref` read it
        in (None once it has moved on, or into the archive); NotFoundError if they have no such
        job."""
        doc = self.db.queue.find_one({"job_id": ref.job_id, "user": self.member})
        if doc is None and self.db.archive.find_one({"_id": ref.job_id, "user": self.member}):
            return None  # finished and archived meanwhile by another run
        if doc is None:
            raise NotFoundError(f"{self.member} has no job {ref.job_id}")
        job = Job.of(doc)
        return job if job.status is ref.status else None


class WatchdogStore(Protocol):
    """Where a watchdog's stages keep their jobs: a `LocalStore`, or the service's."""

    @property
    def member(self) -> str: ...

    def run(self, op: Op[R]) -> R: ...

    def prepare(self) -> None: ...


class Op(BaseModel, Generic[R]):
    """One operation; `apply` carries it out for `store.member`. What it carries is only what
    its models declare: no field a model does not know (stored parts of a job keep those when
    read, never when written), no key a store would take for an operator, nothing nested
    deeper than an entry may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _declared_only(self) -> Op[R]:
        _check_declared(self, 0)
        return self

    def apply(self, store: LocalStore) -> R:
        raise NotImplementedError


def _check_declared(value: Any, depth: int) -> None:
    if depth > 2 * DEPTH:  # an operation's own nesting around a document's
        raise ValueError(f"nested more than {2 * DEPTH} deep")
    if isinstance(value, BaseModel):
        if value.model_extra:
            raise ValueError(f"{type(value).__name__} has no field {next(iter(value.model_extra))}")
        value = dict(value)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$") or "\0" in key:
                raise ValueError(f"{key!r} cannot be a field name")
            _check_declared(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_declared(item, depth + 1)


def result_type(op: Op[Any]) -> Any:
    """What `op` returns, as its class declares it (`Op[...]`)."""
    for base in type(op).__mro__:
        meta = getattr(base, "__pydantic_generic_metadata__", None)
        if meta and meta["origin"] is Op:
            return meta["args"][0]
    raise TypeError(f"{type(op).__name__} declares no result")


def results(op: Op[Any]) -> TypeAdapter[Any]:
    return TypeAdapter(result_type(op))

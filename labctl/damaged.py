"""Stored records that do not validate (edited by hand, written by a broken labctl): a reader
shows each as one `Damaged` row beside the good records it found (a `Listing`), so that one bad
record never breaks a listing, a page or a command for anyone else.

A reader asked for one record by its id raises its typed error instead (`MalformedJob`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pydantic
from pydantic import BaseModel, Field, computed_field

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def problem(exc: pydantic.ValidationError) -> str:
    """What is wrong, in one line: the first field refused and why."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "document"
    return f"{where}: {first['msg']}"


class Damaged(BaseModel):
    """One stored record that does not validate: which it is, where, and what is wrong."""

    kind: str = Field(
        description="what it should be: job (in queue or archive), heartbeat or session (in meta)"
    )
    id: str = Field(description="the job's id, or the `meta` record's key")
    problem: str = Field(description="the first field refused and why")

    @computed_field(description="the record and its problem in one line")  # type: ignore[prop-decorator]
    @property
    def line(self) -> str:
        return f"{self.kind} {self.id}: {self.problem}"


@dataclass(frozen=True)
class Listing(Generic[T]):
    """What a reader found: the records that validate, and the damaged ones beside them."""

    items: list[T] = field(default_factory=list)
    damaged: list[Damaged] = field(default_factory=list)


def validated(model: type[M], docs: list[dict[str, Any]], kind: str, key: str) -> Listing[M]:
    """`docs` read into `model`; each that does not validate is a `Damaged` named by `key`."""
    found: Listing[M] = Listing()
    for doc in docs:
        try:
            found.items.append(model.model_validate(doc))
        except pydantic.ValidationError as exc:
            name = str(doc.get(key) or doc.get("_id"))
            found.damaged.append(Damaged(kind=kind, id=name, problem=problem(exc)))
    return found

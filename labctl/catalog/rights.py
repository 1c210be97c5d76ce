"""Who may change what in an experiment.

Everyone in the lab may read every experiment and add or change its free fields. The fields that
steer the watchdog (where the data lie, whether they are complete, whose experiment it is) only
the experiment's owner (its owner field, `user` by default) or an admin may set or change, and
`results` only the watchdog writes, for the jobs it ran (`record_result`). Whoever holds the
database credential itself acts as an admin: labctl cannot stop them, so on a shared database
only the labctl service holds it and members come through the service with their own login.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labctl.catalog import Entry
from labctl.catalog.fields import get_dotted
from labctl.config import DataSchema
from labctl.errors import PermissionDenied, ValidationError

RESULTS = "results"


@dataclass(frozen=True)
class Actor:
    """Who changes the catalog: a lab member, or an admin."""

    username: str
    admin: bool = False


def steering_fields(schema: DataSchema) -> list[str]:
    return [
        schema.raw_path_field,
        schema.processed_path_field,
        schema.complete_field,
        schema.owner_field,
    ]


def _touches(name: str, protected: str) -> bool:
    """Whether setting dotted `name` changes the field `protected` or something inside it."""
    return name == protected or name.startswith(protected + ".") or protected.startswith(name + ".")


def _check(actor: Actor, owner: Any, names: list[str], schema: DataSchema, what: str) -> None:
    results = [name for name in names if _touches(name, RESULTS)]
    if results:
        raise ValidationError(f"{results[0]}: results are recorded by the watchdog only")
    if actor.admin or owner == actor.username:
        return
    steering = [n for n in names if any(_touches(n, p) for p in steering_fields(schema))]
    if steering:
        raise PermissionDenied(
            f"{what} is {owner}'s: only they or an admin may set {', '.join(steering)}"
        )


def check_new(actor: Actor, entry: Entry, schema: DataSchema) -> None:
    """A member logs experiments they own; an admin logs for anyone."""
    owner = get_dotted(entry, schema.owner_field)
    _check(actor, owner, list(entry), schema, f"experiment {entry['dataset']}")


def check_change(
    actor: Actor, entry: Entry, changes: Mapping[str, Any], schema: DataSchema
) -> None:
    """`changes` (dotted names) to `entry`; a field set to the value it has changes nothing."""
    owner = get_dotted(entry, schema.owner_field) or entry.get("created_by")
    changed = [name for name, value in changes.items() if get_dotted(entry, name) != value]
    _check(actor, owner, changed, schema, f"experiment {entry['dataset']}")

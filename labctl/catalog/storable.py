"""Whether a value or an entry can be stored: BSON's rules and labctl's limits, checked before the
first write so that a batch is stored whole or not at all."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

import bson
import bson.errors

from labctl.catalog import Entry
from labctl.errors import ValidationError
from labctl.limits import DEPTH, DOCUMENT_BYTES, FIELDS, NAME_PART_CHARS

INT64 = range(-(2**63), 2**63)
_PLAIN = (type(None), bool, int, float, str, bytes, dt.datetime)


def check_value(name: str, value: Any) -> None:
    """A value for field `name` is one BSON holds, within the limits, with keys that are data
    (no `$` operators, no dots); else `ValidationError` naming the field."""
    _check(name, value, depth=name.count(".") + 1)


def _check(name: str, value: Any, depth: int) -> None:
    if depth > DEPTH:
        raise ValidationError(f"field {name!r} is nested deeper than {DEPTH} levels")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_key(name, key)
            _check(name, item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check(name, item, depth + 1)
    elif not isinstance(value, _PLAIN):
        raise ValidationError(f"field {name!r}: a {type(value).__name__} cannot be stored")
    elif isinstance(value, int) and value not in INT64:  # (too long to be shown as digits)
        raise ValidationError(
            f"field {name!r}: an integer of {value.bit_length()} bits cannot be stored: "
            "beyond 64-bit integers"
        )
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"field {name!r}: {value} cannot be stored: not a finite number")


def _check_key(name: str, key: Any) -> None:
    if not isinstance(key, str):
        raise ValidationError(f"field {name!r}: key {key!r} is not text")
    if key.startswith("$"):
        raise ValidationError(f"field {name!r}: key {key!r} looks like an operator; use another")
    if not key or "." in key or "\0" in key or len(key) > NAME_PART_CHARS:
        raise ValidationError(
            f"field {name!r}: key {key[:40]!r} must be 1 to {NAME_PART_CHARS} characters "
            "without '.' or NUL"
        )


def check_entry(doc: Entry) -> None:
    """A whole entry fits the store: at most `FIELDS` keys and `DOCUMENT_BYTES` as BSON."""
    where = f"dataset {doc.get('dataset')}"
    keys = _count_keys(doc)
    if keys > FIELDS:
        raise ValidationError(f"{where}: {keys} fields, more than the {FIELDS} an entry may have")
    check_size(doc)


def check_size(doc: Entry) -> None:
    """A whole entry takes at most `DOCUMENT_BYTES` as BSON."""
    where = f"dataset {doc.get('dataset')}"
    try:
        size = len(bson.encode(doc))
    except (bson.errors.BSONError, OverflowError, TypeError, ValueError) as exc:
        raise ValidationError(f"{where}: a value cannot be stored ({exc})") from None
    if size > DOCUMENT_BYTES:
        raise ValidationError(
            f"{where}: {size:,} bytes as stored, more than the {DOCUMENT_BYTES:,} an entry may take"
        )


def _count_keys(value: Any) -> int:
    """Keys at every depth, counted without recursion: an entry written by other means than
    labctl may be nested deeper than labctl allows."""
    count, todo = 0, [value]
    while todo:
        node = todo.pop()
        if isinstance(node, Mapping):
            count += len(node)
            todo.extend(node.values())
        elif isinstance(node, (list, tuple)):
            todo.extend(node)
    return count

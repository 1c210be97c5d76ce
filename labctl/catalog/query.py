"""The filter language shared by `labctl query`, the Python API and the REST API.

`--where` takes `FIELD OP VALUE` with OP one of `=`, `!=`, `>=`, `<=`, `>`, `<`, `~` (regular
expression) or the word `in` (comma-separated values). Values are typed by the data schema or, for
free fields, by YAML. The result is a MongoDB filter; field names are checked so that no `$`
operator can be smuggled in. Regular expressions are RE2's syntax (no backreferences or
lookarounds), which the embedded store matches in linear time (see `labctl.db`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Any

from labctl.catalog.fields import check_field_name, coerce, parse_text
from labctl.config import DataSchema
from labctl.db import Filter
from labctl.errors import ValidationError
from labctl.limits import QUERY_TERMS
from labctl.regex import compile_linear

_OPS = {"!=": "$ne", ">=": "$gte", "<=": "$lte", "=": "$eq", ">": "$gt", "<": "$lt", "~": "$regex"}
# Linear in the condition's length: no two whitespace runs compete for the same spaces.
_CONDITION = re.compile(r"\s*([A-Za-z_][\w.]*)(\s*(?:!=|>=|<=|=|>|<|~)|\s+in\s)\s*(.*)", re.DOTALL)
# A comparison whose value starts with operator characters is a mistyped operator (`=>`, `==`).
_OPERATOR_RUN = re.compile(r"[=<>!~]+")
_OPERATORS = "= != > >= < <= ~ in"


def parse_where(condition: str, schema: DataSchema) -> Filter:
    """`"user=charlie"` -> `{"user": {"$eq": "charlie"}}`."""
    match = _CONDITION.fullmatch(condition)
    if not match:
        raise ValidationError(
            f"cannot read condition {condition!r}: use FIELD=VALUE, FIELD>VALUE, FIELD~REGEX, "
            f"FIELD in A,B (operators {_OPERATORS})"
        )
    field, op, text = check_field_name(match[1]), match[2].strip(), match[3]
    if op in _OPS and op != "~" and (extra := _OPERATOR_RUN.match(text)):
        raise ValidationError(
            f"unknown operator {op + extra[0]!r} in {condition.strip()!r}: use one of {_OPERATORS}"
        )
    if op == "~":
        compile_linear(text, field)
        return {field: {"$regex": text}}
    if op == "in":
        values = [_typed(field, part.strip(), schema) for part in text.split(",") if part.strip()]
        if not values:
            raise ValidationError(f"'{field} in' needs at least one value")
        return {field: {"$in": values}}
    return {field: {_OPS[op]: _typed(field, text, schema)}}


def _typed(field: str, text: str, schema: DataSchema) -> Any:
    if field == "acquired_at":
        return coerce(field, text, "datetime")
    spec = schema.fields.get(field)
    return coerce(field, text, spec.type) if spec else parse_text(text, field)


def parse_day(text: str, option: str) -> dt.datetime:
    """A `--since/--until` value: a date or an ISO date-time, read as UTC."""
    try:
        value = coerce(option, text, "datetime")
    except ValidationError:
        raise ValidationError(f"{option} takes a date like 2021-12-15, not {text!r}") from None
    assert isinstance(value, dt.datetime)
    return value


def build_filter(
    conditions: Iterable[str],
    schema: DataSchema,
    since: str | None = None,
    until: str | None = None,
    mapping: Any = None,
) -> Filter:
    """All conditions joined with AND, plus an `acquired_at` range from `since`/`until`, and a
    filter `mapping` as `check_filter` takes it; at most `limits.QUERY_TERMS` conditions."""
    conditions = list(conditions)
    if len(conditions) > QUERY_TERMS:
        raise ValidationError(f"{len(conditions)} conditions: a query takes at most {QUERY_TERMS}")
    clauses = [parse_where(c, schema) for c in conditions]
    window: dict[str, dt.datetime] = {}
    if since:
        window["$gte"] = parse_day(since, "--since")
    if until:
        day = parse_day(until, "--until")
        is_midnight = day.time() == dt.time()
        window["$lt" if is_midnight else "$lte"] = (
            day + dt.timedelta(days=1) if is_midnight else day
        )
    if window:
        clauses.append({"acquired_at": window})
    if mapping is not None and (checked := check_filter(mapping)):
        clauses.append(checked)
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def check_filter(filter: Any) -> Filter:
    """A filter given as a plain mapping (Python or REST API): field names and equality values only,
    or `{"$op": value}` comparisons from the same set as `--where`."""
    if not isinstance(filter, dict):
        raise ValidationError("a filter must be a mapping of field names to values")
    allowed = {*_OPS.values(), "$in"}
    for field, value in filter.items():
        check_field_name(field)
        if isinstance(value, dict) and any(k.startswith("$") for k in value):
            unknown = set(value) - allowed
            if unknown:
                raise ValidationError(f"operator(s) {sorted(unknown)} are not allowed in {field}")
            for op, operand in value.items():
                _check_operand(field, op, operand)
        else:
            _plain(field, value)
    return filter


def _check_operand(field: str, op: str, operand: Any) -> None:
    if op == "$in" and not isinstance(operand, list):
        raise ValidationError(f"$in of {field} takes a list of values")
    if op == "$regex":
        compile_linear(operand, field)
    _plain(field, operand)


def _plain(field: str, value: Any) -> None:
    """A value compared with is data: no `$` operator hides at any depth inside it."""
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).startswith("$"):
                raise ValidationError(f"operator {key!r} is not allowed inside a value of {field}")
            _plain(field, item)
    elif isinstance(value, list):
        for item in value:
            _plain(field, item)


def filter_fields(filter: Filter) -> list[str]:
    """The field names a filter (from `build_filter`) compares, in order."""
    names: list[str] = []
    for key, value in filter.items():
        if key in ("$and", "$or"):
            names += [name for clause in value for name in filter_fields(clause)]
        else:
            names.append(key)
    return names


def result_columns(fields: Sequence[str]) -> list[str]:
    """The columns of a query's table: the dataset id first, always, then the fields asked for."""
    return ["dataset", *(name for name in fields if name != "dataset")]


def parse_sort(specs: Iterable[str]) -> list[tuple[str, int]]:
    """`["user", "-acquired_at"]` -> `[("user", 1), ("acquired_at", -1)]`."""
    return [
        (check_field_name(spec[1:]), -1) if spec.startswith("-") else (check_field_name(spec), 1)
        for spec in specs
    ]

"""The fields of `data` entries and the rules that make them valid.

Pure functions: they take values and the configured schema and return documents or raise
`ValidationError` with one clear line. They never touch the database.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from labctl.catalog import Entry, yamltext
from labctl.catalog.storable import check_entry, check_value
from labctl.config import FIELD_NAME, DataSchema, FieldType
from labctl.errors import ValidationError
from labctl.limits import DOCUMENT_BYTES, NAME_PART_CHARS, NAME_PARTS

DATASET_ID = re.compile(r"^[0-9]{8}_[0-9]{6}$")


MANAGED_FIELDS = ("dataset", "acquired_at", "created_by", "created_at", "updated_by", "updated_at")


def dataset_text(value: object) -> str:
    """A dataset id as given (from YAML, JSON or Python): text, else one line saying why not."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        digits = str(value) if value.bit_length() < 64 else "beyond 64 bits"  # else too long
        quoted = f"{digits[:8]}_{digits[8:]}" if len(digits) == 14 else "YYYYMMDD_HHMMSS"
        raise ValidationError(
            f"dataset id {digits} was read as a number: dataset ids must be quoted in YAML: "
            f"'{quoted}'"
        )
    raise ValidationError(f"dataset id {value!r} must be text of the form YYYYMMDD_HHMMSS")


def parse_dataset_id(dataset: object) -> dt.datetime:
    """`YYYYMMDD_HHMMSS` -> its acquisition time (UTC); rejects malformed or impossible dates."""
    dataset = dataset_text(dataset)
    if not DATASET_ID.fullmatch(dataset):
        raise ValidationError(f"dataset id {dataset!r} is not of the form YYYYMMDD_HHMMSS")
    try:
        return dt.datetime.strptime(dataset, "%Y%m%d_%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ValidationError(f"dataset id {dataset!r} is not a real date and time") from None


def parse_text(text: str, name: str) -> Any:
    """A value of field `name` typed on the command line, typed by YAML: `3` -> 3, `true` -> True,
    `[a, b]`; without aliases or deep nesting (see `yamltext`)."""
    if len(text) > DOCUMENT_BYTES:
        raise ValidationError(
            f"field {name!r}: longer than the {DOCUMENT_BYTES:,} bytes an entry may take"
        )
    try:
        value = yamltext.load(text)
    except yaml.YAMLError:
        return text
    except ValidationError as exc:
        raise ValidationError(f"field {name!r}: {exc}") from None
    return text if value is None and text.strip() not in ("null", "~") else value


def coerce(name: str, value: Any, kind: FieldType) -> Any:
    """Convert `value` (text or already typed) to the schema type of field `name`."""
    if isinstance(value, str) and kind != "str" and kind != "path":
        value = parse_text(value, name)
    try:
        return _COERCE[kind](value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(
            f"field {name!r} must be {kind}, got {_shown(value)} ({exc})"
        ) from None


def _shown(value: Any) -> str:
    """`value` as an error shows it: an integer too long for digits by its size."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)


def _to_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise TypeError("not a plain value")
    if isinstance(value, int) and value.bit_length() > 64:
        raise TypeError("an integer too long for text")
    text = str(value)
    if "\0" in text:
        raise ValueError("contains a NUL byte")
    return text


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise TypeError("not a whole number")
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("not a number")
    return float(value)


def _to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("use true or false")
    return value


def _to_datetime(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise TypeError("not a date-time")
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _to_date(value: Any) -> dt.datetime:
    """Dates are stored as midnight UTC date-times: BSON has no plain date type."""
    day = _to_datetime(value)
    return day.replace(hour=0, minute=0, second=0, microsecond=0)


def _to_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("not a list; write it as [a, b]")
    return value


def _to_path(value: Any) -> str:
    text = _to_str(value)
    if not text:
        raise ValueError("empty")
    return text


_COERCE = {
    "str": _to_str,
    "path": _to_path,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "datetime": _to_datetime,
    "date": _to_date,
    "list": _to_list,
}


def set_dotted(doc: dict[str, Any], name: str, value: Any) -> None:
    """`set_dotted(d, "runclass.id", "x")` -> `d["runclass"]["id"] = "x"`."""
    *parents, leaf = name.split(".")
    node = doc
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValidationError(f"field {name!r} conflicts with the plain value of {part!r}")
        node = child
    node[leaf] = value


def get_dotted(doc: Mapping[str, Any], name: str) -> Any:
    """The value at a dotted path, or None when any part is missing."""
    node: Any = doc
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested documents -> one level with dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def is_field_name(name: str) -> bool:
    """Dotted identifiers (`runclass.id`), at most `NAME_PARTS` of `NAME_PART_CHARS` each."""
    parts = name.split(".")
    return (
        len(parts) <= NAME_PARTS
        and all(len(part) <= NAME_PART_CHARS for part in parts)
        and FIELD_NAME.fullmatch(name) is not None
    )


def check_field_name(name: str) -> str:
    if not is_field_name(name):
        raise ValidationError(
            f"field name {name[:80]!r} must be dotted identifiers like runclass.id, at most "
            f"{NAME_PARTS} parts of {NAME_PART_CHARS} characters"
        )
    return name


def typed_fields(fields: Mapping[str, Any], schema: DataSchema) -> dict[str, Any]:
    """Flat `{dotted name: value}` -> the same, each value typed by the schema or by YAML."""
    typed: dict[str, Any] = {}
    for name, value in fields.items():
        check_field_name(name)
        if name.split(".")[0] in (*MANAGED_FIELDS, "_id"):
            raise ValidationError(f"field {name!r} is set by labctl and cannot be given")
        spec = schema.fields.get(name)
        if spec is not None:
            typed[name] = coerce(name, value, spec.type)
        else:
            typed[name] = parse_text(value, name) if isinstance(value, str) else value
        check_value(name, typed[name])
    return typed


def new_data_entry(
    dataset: str, fields: Mapping[str, Any], schema: DataSchema, by: str, now: dt.datetime
) -> Entry:
    """A complete, valid `data` document from a dataset id and flat dotted fields."""
    acquired = parse_dataset_id(dataset)
    typed = typed_fields(fields, schema)
    missing = [name for name in schema.required if typed.get(name) in (None, "")]
    if missing:
        raise ValidationError(f"dataset {dataset}: missing required field(s) {', '.join(missing)}")
    doc: Entry = {"dataset": dataset, "acquired_at": acquired}
    for name, value in typed.items():
        set_dotted(doc, name, value)
    doc.update(created_by=by, created_at=now, updated_by=by, updated_at=now)
    check_entry(doc)
    return doc


def update_of(
    fields: Mapping[str, Any], schema: DataSchema, by: str, now: dt.datetime
) -> dict[str, Any]:
    """The `$set` for changing fields of an existing entry (dotted names address nested ones)."""
    typed = typed_fields(fields, schema)
    for name in schema.required:
        if name in typed and typed[name] in (None, ""):
            raise ValidationError(f"required field {name!r} cannot be emptied")
    return {"$set": {**typed, "updated_by": by, "updated_at": now}}


def check_update(doc: Entry, change: Mapping[str, Any]) -> None:
    """The entry `doc` can be stored as `change` (from `update_of`) leaves it."""
    after = copy.deepcopy(dict(doc))
    for name, value in change["$set"].items():
        set_dotted(after, name, value)
    check_entry(after)


def data_json_schema(schema: DataSchema) -> dict[str, Any]:
    """The MongoDB `$jsonSchema` that enforces the required top-level fields of `data`."""
    required = ["dataset", "acquired_at", *(n for n in schema.required if "." not in n)]
    return {
        "bsonType": "object",
        "required": required,
        "properties": {"dataset": {"bsonType": "string", "pattern": DATASET_ID.pattern}},
    }


def parse_assignments(items: Iterable[str], what: str) -> dict[str, str]:
    """`["a=1", "b.c=x"]` -> `{"a": "1", "b.c": "x"}`; the value may contain '='."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"{what} {item!r} must look like name=value")
        result[check_field_name(name.strip())] = value
    return result

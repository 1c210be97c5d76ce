"""Reading the add/edit forms: text per field, checked one by one so errors sit beside the field.

Typing and validation are labctl's own (`typed_fields`, `parse_dataset_id`); this only runs them
field by field and keeps the texts to show the form again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from starlette.datastructures import FormData

from labctl.catalog.fields import parse_dataset_id, typed_fields
from labctl.config import DataSchema
from labctl.errors import ValidationError

FIELD_PREFIX = "f."  # a named field's input is `f.<dotted name>`
EXTRA_ROWS = 3  # empty key/value rows offered for free fields


@dataclass
class FieldsForm:
    """What was typed: named fields, free key/value rows, and an error per field or row."""

    values: dict[str, str] = field(default_factory=dict)
    extras: list[tuple[str, str]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        """The free rows to show: those given plus empty ones."""
        return self.extras + [("", "")] * max(1, EXTRA_ROWS - len(self.extras))

    def extra_error(self, index: int) -> str:
        return self.errors.get(f"extra.{index}", "")


def read_form(form: FormData, names: Iterable[str]) -> FieldsForm:
    """The texts of the named fields that were sent, and of the non-empty free rows."""
    values = {
        name: str(form.get(FIELD_PREFIX + name) or "").strip()
        for name in names
        if FIELD_PREFIX + name in form
    }
    keys, texts = form.getlist("extra_key"), form.getlist("extra_value")
    extras = [
        (str(key).strip(), str(value).strip())
        for key, value in zip(keys, texts, strict=False)
        if str(key).strip() or str(value).strip()
    ]
    return FieldsForm(values, extras)


def check_dataset(form: FieldsForm, dataset: str) -> None:
    try:
        parse_dataset_id(dataset)
    except ValidationError as exc:
        form.errors["dataset"] = str(exc)


def collect(
    form: FieldsForm, given: Mapping[str, str], schema: DataSchema, required: Iterable[str]
) -> dict[str, str]:
    """`given` (named field -> text) plus the free rows, each checked; errors go into `form`."""
    fields: dict[str, str] = {}
    needed = set(required)
    for name, value in given.items():
        if name in needed and not value:
            form.errors[name] = "required"
        elif _check(form, name, name, value, schema):
            fields[name] = value
    for index, (key, value) in enumerate(form.extras):
        where = f"extra.{index}"
        if key in fields or key in given:
            form.errors[where] = f"field {key!r} is given twice"
        elif _check(form, where, key, value, schema):
            fields[key] = value
    return fields


def _check(form: FieldsForm, where: str, name: str, value: str, schema: DataSchema) -> bool:
    try:
        typed_fields({name: value}, schema)
    except ValidationError as exc:
        form.errors[where] = str(exc)
        return False
    return True

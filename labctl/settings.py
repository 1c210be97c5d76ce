"""What every settings model shares: frozen, typed, unknown keys refused, errors in one line."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError


class Settings(BaseModel):
    """A frozen, typed model of settings that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def describe(exc: PydanticValidationError) -> str:
    """The first problem pydantic found, as one line, and how many more there are."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        text = f"unknown key '{where}'"
    else:
        text = f"{where}: {first['msg']}"
    return text + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else "")

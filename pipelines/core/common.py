"""What every job type needs: its error, typed options, input paths, splits, atomic outputs.

Stdlib only, so the stdlib-only job types (file_stats, selftest) run where NumPy is missing.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
SPLIT_KEYS = ("split_idx", "num_splits")
BATCH_PIXELS = 1 << 22


class PipelineError(Exception):
    """Bad input or options: reported as one line on stderr, exit status 2."""


def parse_options(cls: type[T], options: Mapping[str, Any], job_type: str) -> T:
    """`options` as the frozen dataclass `cls`: unknown keys and wrong types are refused.

    `split_idx`/`num_splits` are always present (the command line sets them); a job type whose
    options class lacks them is not splittable and refuses a split.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = dict(options)
    if "split_idx" not in names:
        split = values.pop("split_idx", None), values.pop("num_splits", 1)
        if split[0] is not None or split[1] not in (None, 1):
            raise PipelineError(f"{job_type} is not splittable (got split_idx/num_splits {split})")
    unknown = sorted(set(values) - names)
    if unknown:
        raise PipelineError(
            f"{job_type}: unknown option(s) {', '.join(unknown)} "
            f"(options: {', '.join(sorted(names - set(SPLIT_KEYS)))})"
        )
    for name, value in values.items():
        values[name] = _typed(name, value, hints[name])
    if "split_idx" in names:
        check_split(values.get("split_idx"), values.get("num_splits", 1))
    return cls(**values)


def _typed(name: str, value: Any, hint: Any) -> Any:
    allowed = typing.get_args(hint) or (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (bool in allowed) or not isinstance(value, allowed):
        kinds = " or ".join(t.__name__ for t in allowed if t is not type(None))
        raise PipelineError(f"option {name} must be {kinds}, got {value!r}")
    return value


def check_split(split_idx: int | None, num_splits: int) -> None:
    """Refuse a split that does not exist: 0 <= split_idx < num_splits, num_splits >= 1."""
    if num_splits < 1:
        raise PipelineError(f"num_splits must be at least 1, got {num_splits}")
    if split_idx is not None and not 0 <= split_idx < num_splits:
        raise PipelineError(f"split_idx must be in 0..{num_splits - 1}, got {split_idx}")


def split_range(n_items: int, split_idx: int | None, num_splits: int) -> range:
    """The contiguous items of split `split_idx` of `num_splits` (all of them when None).

    Like `numpy.array_split`: the first `n_items % num_splits` splits get one item more, so
    every item is in exactly one split; splits beyond `n_items` are empty.
    """
    check_split(split_idx, num_splits)
    if split_idx is None:
        return range(n_items)
    size, extra = divmod(n_items, num_splits)
    start = split_idx * size + min(split_idx, extra)
    return range(start, start + size + (split_idx < extra))


def batches(items: range, frame_pixels: int) -> Iterator[range]:
    """`items` in consecutive runs of about `BATCH_PIXELS` pixels (at least one frame each)."""
    size = max(1, BATCH_PIXELS // frame_pixels)
    for start in range(items.start, items.stop, size):
        yield range(start, min(start + size, items.stop))


def input_file(inputs: Path, name: str, option: str) -> Path:
    """The file `name` (relative, e.g. `raw/stack.h5`) inside the job's inputs folder."""
    relative = PurePosixPath(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise PipelineError(
            f"option {option} must be a path inside the inputs folder, got {name!r}"
        )
    path = inputs / relative
    if not path.is_file():
        raise PipelineError(f"input {name} ({option}) not found in {inputs}")
    return path


def output_name(stem: str, suffix: str, split_idx: int | None) -> str:
    """`stem.suffix` for an unsplit run, `stem_{split_idx}.suffix` for one split."""
    return f"{stem}{suffix}" if split_idx is None else f"{stem}_{split_idx}{suffix}"


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path that becomes `path` only when the block succeeds (no half-written file)."""
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)

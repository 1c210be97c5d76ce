"""Job types as pipelines/ declares them: each `pipelines/<type>.py` module's `INTERFACE`
literal (see labctl.config.jobtypes), read from its source at a git commit or in the working tree
without importing it, then adjusted by the config (`JobTypes`)."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from labctl.config import Config
from labctl.config.jobtypes import Interface, JobType, JobTypes
from labctl.errors import ConfigError
from labctl.jobs.codeversion import git, shipped_commit
from labctl.settings import describe

DECLARATION = "INTERFACE"


def job_types_at(config: Config, version: Mapping[str, Any] | None = None) -> JobTypes:
    """The job types at the pipelines version a job ships (a `code_version` record): its
    commit, or the working tree for an allowed dirty one; the working tree without `version`."""
    commit = shipped_commit(version) if version is not None else None
    return JobTypes(
        declared(config.watchdog.pipelines, commit), config.job_types, config.offered_job_types
    )


def declared(pipelines: Path, commit: str | None = None) -> dict[str, JobType]:
    """The job types the modules of `pipelines` declare: at `commit`, or (None) in the working
    tree. A job type module is a top-level `*.py` whose name does not start with `_`."""
    if not pipelines.is_dir():
        raise ConfigError(f"the pipelines folder {pipelines} does not exist")
    if commit is None:
        sources = {
            path.stem: (str(path), _read(path))
            for path in sorted(pipelines.glob("*.py"))
            if not path.name.startswith("_")
        }
    else:
        files = git(pipelines, "ls-tree", "-z", "--name-only", commit).split("\0")
        sources = {
            name[: -len(".py")]: (
                f"{pipelines / name} at commit {commit[:12]}",
                git(pipelines, "cat-file", "blob", f"{commit}:./{name}"),
            )
            for name in sorted(files)
            if name.endswith(".py") and not name.startswith("_")
        }
    found = {}
    for entry, (where, source) in sources.items():
        spec = parse_declaration(source, entry, where)
        if spec is not None:
            found[entry] = spec
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _declaration(tree: ast.Module) -> ast.expr | None:
    """The value last assigned to `INTERFACE` at the top level of a module."""
    value: ast.expr | None = None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == DECLARATION for target in targets):
            value = node.value
    return value


def parse_declaration(source: str, entry: str, where: str) -> JobType | None:
    """The job type that module `entry` declares in its `INTERFACE` literal, read from its
    `source` without running it; None if it declares none. `where` names it in errors."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ConfigError(f"{where}: not valid Python (line {exc.lineno})") from None
    value = _declaration(tree)
    if value is None:
        return None
    try:
        literal = ast.literal_eval(value)
    except (ValueError, TypeError, RecursionError):
        literal = None
    if not isinstance(literal, dict):
        raise ConfigError(
            f"{where}: {DECLARATION} (line {value.lineno}) must be a dict literal of plain "
            "values (strings, numbers, booleans, None, lists, dicts)"
        )
    try:
        interface = Interface.model_validate(literal)
        return JobType.model_validate({**interface.model_dump(), "entry": entry})
    except PydanticValidationError as exc:
        raise ConfigError(f"{where}: {DECLARATION} {describe(exc)}") from None

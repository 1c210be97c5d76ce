"""The package's shape, as docs/development.md's Layout draws it: each rule here is one that a
change could quietly break."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from labctl.compute.slurm import _SLURM_STATES
from labctl.model.states import JobState

PACKAGE = Path(__file__).resolve().parent.parent / "labctl"
EXAMPLE = PACKAGE / "install" / "example"  # data: links to pipelines/ files the demo ships
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if EXAMPLE not in p.parents)
MAX_LINES = 400


def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _quoted(words: Iterable[object]) -> re.Pattern[str]:
    """Any of `words` as a string literal."""
    return re.compile("[\"'](" + "|".join(re.escape(str(w)) for w in words) + ")[\"']")


def test_every_module_name_is_unique() -> None:
    names = Counter(path.name for path in MODULES if path.name != "__init__.py")
    assert [name for name, count in names.items() if count > 1] == []


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in MODULES
        if (n := len(_source(p).splitlines())) > MAX_LINES
    }
    assert long == {}


def test_only_the_transport_starts_processes() -> None:
    transport = PACKAGE / "compute" / "transport"
    starts = re.compile(r"\bsubprocess\b|os\.(system|popen|spawn|exec|kill)")
    found = [p for p in MODULES if transport not in p.parents and starts.search(_source(p))]
    assert found == []


def test_slurm_s_state_names_are_read_in_slurm_py_alone() -> None:
    words = _quoted(_SLURM_STATES)
    allowed = {PACKAGE / "compute" / "slurm.py"}
    found = {
        str(p.relative_to(PACKAGE)): words.findall(_source(p)) for p in MODULES if p not in allowed
    }
    assert {name: hits for name, hits in found.items() if hits} == {}


def test_job_states_are_spelled_through_the_enum() -> None:
    words = _quoted(state.value for state in JobState)
    allowed = {PACKAGE / "model" / "states.py"}
    sources = [p for p in MODULES if p not in allowed] + sorted(PACKAGE.rglob("*.html"))
    found = {str(p.relative_to(PACKAGE)): words.findall(_source(p)) for p in sources}
    assert {name: hits for name, hits in found.items() if hits} == {}

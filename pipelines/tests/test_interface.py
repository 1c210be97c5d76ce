"""Every job type declares its interface (`INTERFACE`, read by labctl from the source), and the
options it declares are the ones its code accepts, with the same defaults."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from pipelines.__main__ import job_types
from pipelines.core.common import SPLIT_KEYS


@pytest.mark.parametrize("name", job_types())
def test_the_declared_interface_matches_the_code(name: str) -> None:
    module = importlib.import_module(f"pipelines.{name}")
    interface = module.INTERFACE
    assert interface["outputs"], f"{name} declares no outputs"
    options = getattr(module, "Options", None)
    if options is None:  # a stdlib job type reading its options by hand
        return
    fields = {f.name: f.default for f in dataclasses.fields(options)}
    declared = {key: spec.get("default") for key, spec in interface["options"].items()}
    assert {k: v for k, v in fields.items() if k not in SPLIT_KEYS} == declared
    assert ("split_idx" in fields) == interface.get("splittable", False)

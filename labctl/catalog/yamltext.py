"""YAML as labctl reads what members type: values (`--set`, forms, REST) and entry files.

PyYAML's safe loader still expands anchors and aliases, so a few hundred bytes can stand for
gigabytes ("billion laughs"), and it recurses once per nesting level. This loader refuses anchors
and aliases, stops at `limits.DEPTH` levels, and reads a date as midnight UTC (the store has no
plain date type), so what it returns can be checked and stored as it is. A config file is read
with `config.yamlfile.BoundedLoader`, which only stops at `limits.CONFIG_DEPTH` levels.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

from labctl.config.yamlfile import BoundedLoader
from labctl.errors import ValidationError
from labctl.limits import DEPTH


class _Loader(BoundedLoader):
    limit = DEPTH

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ValidationError("YAML anchors and aliases are not allowed")
        return super().compose_node(parent, index)


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> dt.date:
    value = loader.construct_yaml_timestamp(node)
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)


def load(text: str) -> Any:
    """`text` read as YAML; `yaml.YAMLError` if it is not YAML, `ValidationError` (one line,
    without a subject: the caller names the field or file) if labctl refuses what it holds."""
    try:
        return yaml.load(text, Loader=_Loader)
    except ValueError as exc:  # an impossible date (2021-13-01), an int of 5,000 digits
        raise ValidationError(f"an impossible value ({exc})") from None

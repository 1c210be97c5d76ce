"""The YAML loader labctl reads settings with: PyYAML's safe loader, stopped at a depth of
nesting (`limits.CONFIG_DEPTH` for a config file) before PyYAML's recursion is."""

from __future__ import annotations

import yaml

from labctl.errors import ValidationError
from labctl.limits import CONFIG_DEPTH


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stopped at `limit` levels of nesting before its recursion is."""

    depth = 0
    limit = CONFIG_DEPTH

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        opens = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        self.depth += opens
        if self.depth > self.limit:
            raise ValidationError(f"nested deeper than {self.limit} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= opens

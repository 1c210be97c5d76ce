"""Access: how a member's commands reach the lab, and the user actions that act on it.

`lab.py` is the seam (`Lab`; `LocalLab` on a database), `service.py` the same over the labctl
service with a token, `servicedb.py` a member's watchdog through the service, and `cancel.py` the
one cancel and stop of the CLI, the REST API and the service. The front ends (CLI, web, install,
the Python API) stand above this package; the watchdog's stages and all else, below it.
"""

from __future__ import annotations

from collections.abc import Callable

from labctl.access.lab import Lab, LocalLab
from labctl.config import Config
from labctl.db import Database


def open_lab(config: Config, database: Callable[[], Database]) -> Lab:
    """The service if the config names one (`service:`), else `database()` as `config.user`."""
    if config.service is not None:
        from labctl.access.service import ServiceLab  # HTTP and TLS: only for a service

        return ServiceLab.of(config.service)
    return LocalLab(config, database())

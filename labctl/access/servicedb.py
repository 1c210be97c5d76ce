"""A member's watchdog reaching the store through the service: `ServiceStore`.

On a member's machine there is no database credential, only their token. Their watchdog's
stages send each of their typed operations (`labctl.stages.seam`) to the service
(`POST /api/v1/watchdog/ops`), which checks the token and carries the operation out for the
token's owner (`labctl.web.deputy`); the answer comes back as the operation's own result type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from labctl.config import Config
from labctl.errors import ServiceError
from labctl.settings import ServiceConfig
from labctl.stages.seam import Op, results

R = TypeVar("R")
PATH = "/watchdog/ops"


def encode(op: Op[Any]) -> bytes:
    """An operation as the service takes it: only the fields it was given (a partial update
    stays partial)."""
    body = op.model_dump(mode="json", exclude_unset=True)
    body["op"] = op.model_dump(include={"op"})["op"]  # its name, a default never "set"
    return json.dumps(body).encode()


@dataclass(frozen=True)
class ServiceStore:
    """The store as the member whose token it is works on it, through the service."""

    service: ServiceConfig
    token: str
    member: str

    def run(self, op: Op[R]) -> R:
        from labctl.access.service import send

        answer = send(self.service, "POST", PATH, encode(op), self.token)
        try:
            result: R = results(op).validate_python(json.loads(answer)["result"])
        except (ValueError, KeyError, TypeError, ValidationError):
            raise ServiceError(f"{self.service.url} did not answer as a labctl service") from None
        return result

    def prepare(self) -> None:
        """Nothing: the service upgrades the store to its schema before it serves."""


def member_watchdog(config: Config, service: ServiceConfig) -> tuple[ServiceStore, Config]:
    """The store a member's watchdog works on through `service`, and `config` acting as the
    member whose token it holds (whatever its `user` says)."""
    from labctl.access.service import ServiceLab

    lab = ServiceLab.of(service)
    member = lab.whoami().username
    return ServiceStore(service, lab.token, member), config.model_copy(update={"user": member})

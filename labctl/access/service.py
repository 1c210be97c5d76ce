"""`ServiceLab`: the `Lab` operations over the labctl service's REST API, with a member's token.

Standard library only (urllib + json). TLS certificates are verified; redirects are not followed
(the token would go along); every failure is one of labctl's errors with one line that never
shows the token: the service's own problem (403, 404, 409, 422) as the error the local path
raises for it, an unreachable or silent service, a refused token.

JSON has no date-times: the service sends them as ISO 8601 text, which is read back here as
date-times (text of exactly that form reads as the moment it spells).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import ssl
import stat
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

from labctl.access.lab import NewUser, Query
from labctl.catalog import Entry
from labctl.catalog.experiments import NewEntry
from labctl.config import DataSchema
from labctl.config.notifyconfig import Recipient
from labctl.damaged import Listing
from labctl.errors import (
    ConfigError,
    DatabaseUnreachable,
    DuplicateError,
    LabctlError,
    NotFoundError,
    PermissionDenied,
    ServiceError,
    TokenRefused,
    ValidationError,
)
from labctl.jobs.bulk import Action, BulkReport
from labctl.jobs.rerun import RerunRequest
from labctl.jobs.submit import BatchScript, JobRequest, NewJob
from labctl.jobs.usage import UsageReport
from labctl.model.job import Job, JobList
from labctl.settings import ServiceConfig
from labctl.stages.heartbeat import Heartbeats
from labctl.users import Me, User

PAGE = 1000  # the most the service gives in one answer
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,200}")
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
_ERRORS: dict[int, type[LabctlError]] = {
    400: ValidationError,
    403: PermissionDenied,
    404: NotFoundError,
    409: DuplicateError,
    413: ValidationError,
    422: ValidationError,
    503: DatabaseUnreachable,
}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx reaches `_call` as an HTTPError


_opener = urllib.request.build_opener(
    _NoRedirects, urllib.request.HTTPSHandler(context=ssl.create_default_context())
)


def read_token(service: ServiceConfig, env: Mapping[str, str] | None = None) -> str:
    """The member's token: `$LABCTL_TOKEN`, else the token file (which only they may read)."""
    env = os.environ if env is None else env
    path = service.token_file
    token = env.get("LABCTL_TOKEN", "").strip()
    if not token:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"no token in {path}: run 'labctl login {service.url}'") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the token file {path}: {exc}") from None
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path} holds your token but others may read it: chmod 600 {path}")
    if not TOKEN.fullmatch(token):
        raise ConfigError("the token (LABCTL_TOKEN or token file) is not a labctl API token")
    return token


def _dates(value: Any) -> Any:
    if isinstance(value, str) and _DATETIME.fullmatch(value):
        return dt.datetime.fromisoformat(value)
    if isinstance(value, dict):
        return {k: _dates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dates(v) for v in value]
    return value


def _no_json(value: Any) -> Any:
    raise ValidationError(
        f"a {type(value).__name__} cannot be sent to the labctl service: compare dates with "
        "since/until or a where condition, give other values as text or numbers"
    )


def _detail(body: bytes) -> str:
    """The one line of a problem the service answered with (`{"detail": ...}`)."""
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return ""
    if isinstance(detail, list):  # a request the service's models refused, per field
        return "; ".join(
            ".".join(str(p) for p in d.get("loc", [])[1:]) + f": {d.get('msg', '')}"
            for d in detail
            if isinstance(d, dict)
        )
    return str(detail)


def call(
    service: ServiceConfig,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    params: Sequence[tuple[str, Any]] = (),
) -> Any:
    """One request to the service's API; its JSON answer, or a labctl error in one line."""
    data = None if body is None else json.dumps(body, default=_no_json).encode()
    answer = send(service, method, path, data, token, params)
    try:
        return _dates(json.loads(answer))
    except ValueError as exc:
        raise ServiceError(f"{service.url} did not answer as a labctl service: {exc}") from None


def send(
    service: ServiceConfig,
    method: str,
    path: str,
    data: bytes | None,
    token: str | None,
    params: Sequence[tuple[str, Any]] = (),
) -> bytes:
    """One request with a JSON body to the service's API; the answer's body, or a labctl error
    in one line."""
    url = f"{service.url}/api/v1{path}" + (f"?{urlencode(params)}" if params else "")
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data, headers, method=method)
    try:
        with _opener.open(request, timeout=service.timeout_seconds) as answer:
            body: bytes = answer.read()
            return body
    except urllib.error.HTTPError as exc:
        raise _refusal(service, exc, bool(token)) from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise ServiceError(f"cannot reach the labctl service at {service.url}: {reason}") from None
    except TimeoutError:
        raise ServiceError(
            f"the labctl service at {service.url} did not answer within "
            f"{service.timeout_seconds:g} s"
        ) from None
    except (OSError, ValueError) as exc:  # a connection dropped, a malformed answer
        raise ServiceError(f"{service.url} did not answer as a labctl service: {exc}") from None


def _refusal(service: ServiceConfig, exc: urllib.error.HTTPError, sent_token: bool) -> LabctlError:
    detail = _detail(exc.read())
    if exc.code == 401 and not sent_token:  # a login
        return TokenRefused(f"{service.url}: {detail or 'login refused'}")
    if exc.code == 401:
        return TokenRefused(
            f"the labctl service at {service.url} refused the token ({detail or 'unknown'}): "
            f"run 'labctl login {service.url}', or ask an admin for a new token"
        )
    if 300 <= exc.code < 400:
        return ServiceError(
            f"{service.url} redirects to {exc.headers.get('Location')}: set service.url to the "
            "address the service answers at"
        )
    kind = _ERRORS.get(exc.code, ServiceError)
    return kind(detail or f"the labctl service at {service.url} answered HTTP {exc.code}")


def _part(text: str) -> str:
    return quote(text, safe="")


@dataclass
class ServiceLab:
    """The lab's data through the labctl service, as the member whose token it is."""

    service: ServiceConfig
    token: str

    @classmethod
    def of(cls, service: ServiceConfig) -> ServiceLab:
        return cls(service, read_token(service))

    def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        query = [
            (k, item)
            for k, v in params.items()
            if v is not None
            for item in (v if isinstance(v, list | tuple) else [v])
        ]
        return call(self.service, method, path, body, self.token, query)

    @property
    def where(self) -> str:
        return f"the labctl service at {self.service.url}"

    def whoami(self) -> Me:
        return Me(**self._call("GET", "/me"), via=self.where)

    def schema(self) -> DataSchema:
        return DataSchema.model_validate(self._call("GET", "/schema"))

    def log(self, entries: Sequence[NewEntry], *, update: bool = False) -> list[Entry]:
        batch = [{"dataset": dataset, "fields": dict(fields)} for dataset, fields in entries]
        items: list[Entry] = self._call(
            "POST", "/experiments/batch", {"entries": batch, "update": update}
        )["items"]
        return items

    def query(self, query: Query) -> list[Entry]:
        """Page by page (the service gives at most `PAGE` at a time) up to `query.limit`."""
        body = {k: v for k, v in asdict(query).items() if k != "limit"}
        found: list[Entry] = []
        while True:
            want = min(PAGE, query.limit - len(found)) if query.limit else PAGE
            page = self._call(
                "POST", "/experiments/query", {**body, "limit": want, "skip": len(found)}
            )
            found += page["items"]
            if not page["items"] or len(found) >= page["total"] or len(found) == query.limit:
                return found

    def show(self, dataset: str) -> Entry:
        found: Entry = self._call("GET", f"/experiments/{_part(dataset)}")
        return found

    def submit(self, request: JobRequest, *, force: bool = False) -> Job:
        body = NewJob(**request.model_dump(exclude={"user"}), force=force)
        return Job.of(self._call("POST", "/jobs", body.model_dump(mode="json")))

    def batch_script(self, request: JobRequest) -> str:
        body = request.model_dump(mode="json", exclude={"user"})
        return BatchScript.model_validate(self._call("POST", "/jobs/script", body)).batch_script

    def rerun(self, job_id: str, request: RerunRequest) -> Job:
        body = request.model_dump(mode="json", exclude={"user"})
        return Job.of(self._call("POST", f"/jobs/{_part(job_id)}/rerun", body))

    def jobs(self, filter: Mapping[str, Any] | None = None, *, limit: int = 0) -> Listing[Job]:
        """The newest `limit` jobs (at most `PAGE`)."""
        found = self._call("GET", "/jobs", **(filter or {}), limit=min(limit or PAGE, PAGE))
        listed = JobList.model_validate(found)
        return Listing(listed.items, listed.damaged)

    def job(self, job_id: str) -> Job:
        return Job.of(self._call("GET", f"/jobs/{_part(job_id)}"))

    def heartbeats(self) -> Heartbeats:
        return Heartbeats.model_validate(self._call("GET", "/watchdog"))

    def bulk(
        self, action: Action, ids: Sequence[str], filter: Mapping[str, Any], *, confirm: bool
    ) -> BulkReport:
        body = {"action": str(action), "ids": list(ids), **filter, "confirm": confirm}
        return BulkReport.model_validate(self._call("POST", "/jobs/bulk", body))

    def users(self) -> list[User]:
        return [User.model_validate(item) for item in self._call("GET", "/users")["items"]]

    def user(self, username: str) -> User:
        return User.model_validate(self._call("GET", f"/users/{_part(username)}"))

    def add_user(self, user: NewUser) -> User:
        return User.model_validate(self._call("POST", "/users", asdict(user)))

    def set_role(self, username: str, role: str) -> None:
        self._call("PUT", f"/users/{_part(username)}/role", {"role": role})

    def set_password(self, username: str, password: str, current: str | None = None) -> None:
        body = {"password": password, "current_password": current}
        self._call("PUT", f"/users/{_part(username)}/password", body)

    def new_token(self, username: str, days: float | None = None) -> str:
        return str(self._call("POST", f"/users/{_part(username)}/token", {"days": days})["token"])

    def notify_of(self, username: str) -> Recipient:
        return Recipient(**self._call("GET", f"/users/{_part(username)}/notify"))

    def set_notify(self, username: str, mode: str | None, webhook: str | None) -> None:
        body = {"mode": mode, "webhook": webhook}
        self._call("PUT", f"/users/{_part(username)}/notify", body)

    def usage(self, by: Sequence[str], since: str | None) -> UsageReport:
        report = self._call("GET", "/usage", by=list(by) or None, since=since)
        return UsageReport.model_validate(report)


def obtain_token(
    service: ServiceConfig, username: str, password: str, days: float | None = None
) -> str:
    """A new token for `username` from the service, for their password (replacing their old one)."""
    body = {"username": username, "password": password, "days": days}
    answer = call(service, "POST", "/token", body)
    return str(answer["token"])

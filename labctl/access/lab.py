"""The one seam between labctl's commands and the lab's data: the `Lab` protocol.

`LocalLab` calls the library on a database, as the config's `user`, with the authority of
whoever holds that database (the embedded single-user default, or the lab server itself).
`ServiceLab` (`labctl.access.service`) asks the labctl service the same, which acts as the
member whose token it is and checks their rights. The CLI and the Python API take the one
`labctl.access.open_lab` gives: a config with `service:` means the service, and then no database
is opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from labctl.catalog import Entry
from labctl.catalog.experiments import NewEntry, get_entry, log_entries
from labctl.catalog.experiments import query as find_entries
from labctl.catalog.fields import check_field_name
from labctl.catalog.query import build_filter, parse_sort
from labctl.config import Config, DataSchema
from labctl.damaged import Listing
from labctl.db import Database
from labctl.errors import NotFoundError

if TYPE_CHECKING:
    from labctl.config.notifyconfig import Recipient
    from labctl.jobs.bulk import Action, BulkReport
    from labctl.jobs.rerun import RerunRequest
    from labctl.jobs.submit import JobRequest
    from labctl.jobs.usage import UsageReport
    from labctl.model.job import Job
    from labctl.stages.heartbeat import Heartbeats
    from labctl.users import Me, User

# LocalLab imports the code of jobs, heartbeats and accounts in the methods that use it: a
# command that only logs or queries experiments starts without it (benchmarks/bench_startup).


@dataclass(frozen=True)
class Query:
    """Which experiments, and which of their fields: `where` conditions (typed by the lab's
    schema), an acquisition date range and a filter mapping, all joined with AND."""

    fields: Sequence[str] = ()
    where: Sequence[str] = ()
    since: str | None = None
    until: str | None = None
    filter: Mapping[str, Any] = field(default_factory=dict)
    sort: Sequence[str] = ()
    limit: int = 0  # 0: all


@dataclass(frozen=True)
class NewUser:
    """A lab member to add; without a password they cannot log in to the web."""

    username: str
    full_name: str = ""
    email: str = ""
    role: str = "member"
    hpc_accounts: Mapping[str, str] = field(default_factory=dict)
    password: str | None = None


class Lab(Protocol):
    """What the CLI and the Python API do with the lab's data, wherever it is."""

    @property
    def where(self) -> str:
        """The store or the service, for messages."""

    def whoami(self) -> Me: ...
    def schema(self) -> DataSchema: ...
    def log(self, entries: Sequence[NewEntry], *, update: bool = False) -> list[Entry]: ...
    def query(self, query: Query) -> list[Entry]: ...
    def show(self, dataset: str) -> Entry: ...
    def submit(self, request: JobRequest, *, force: bool = False) -> Job: ...
    def batch_script(self, request: JobRequest) -> str: ...
    def rerun(self, job_id: str, request: RerunRequest) -> Job:
        """Queue a rerun of a completed job as it was recorded (`labctl.jobs.rerun`)."""

    def jobs(self, filter: Mapping[str, Any] | None = None, *, limit: int = 0) -> Listing[Job]:
        """The newest `limit` jobs (0: all) a filter selects, its fields as typed
        (`labctl.jobs.bulk.parse_filter`: `{"user": "me", "cluster": "raven"}`), and those of
        them that are damaged."""

    def job(self, job_id: str) -> Job: ...
    def heartbeats(self) -> Heartbeats: ...
    def bulk(
        self, action: Action, ids: Sequence[str], filter: Mapping[str, Any], *, confirm: bool
    ) -> BulkReport:
        """The jobs `ids` or `filter` select and, if `confirm`, what acting did to them
        (`labctl.jobs.bulk.report`)."""

    def users(self) -> list[User]: ...
    def user(self, username: str) -> User: ...
    def add_user(self, user: NewUser) -> User: ...
    def set_role(self, username: str, role: str) -> None: ...
    def set_password(self, username: str, password: str, current: str | None = None) -> None:
        """Set `username`'s web password; the service wants your `current` one to change yours
        (a local store's holder needs none)."""

    def new_token(self, username: str, days: float | None = None) -> str: ...
    def notify_of(self, username: str) -> Recipient:
        """How `username` is told of their jobs (`labctl.users.notify_settings`)."""

    def set_notify(self, username: str, mode: str | None, webhook: str | None) -> None:
        """Change `username`'s notification mode and own webhook ("": none)."""

    def usage(self, by: Sequence[str], since: str | None) -> UsageReport: ...


@dataclass
class LocalLab:
    """The lab's data in a database this process opens itself, acting as `config.user`."""

    config: Config
    db: Database

    @property
    def where(self) -> str:
        return self.db.where

    def whoami(self) -> Me:
        from labctl.users import Me, get_user

        try:
            role: str = get_user(self.db, self.config.user).role
        except NotFoundError:
            role = "no account"
        return Me(username=self.config.user, role=role, via=self.where)

    def schema(self) -> DataSchema:
        return self.config.data

    def log(self, entries: Sequence[NewEntry], *, update: bool = False) -> list[Entry]:
        return log_entries(self.db, self.config, entries, update=update)

    def query(self, query: Query) -> list[Entry]:
        names = [check_field_name(f) for f in query.fields]
        filter = build_filter(query.where, self.config.data, query.since, query.until, query.filter)
        return find_entries(self.db, names, filter, parse_sort(query.sort), query.limit)

    def show(self, dataset: str) -> Entry:
        return get_entry(self.db, dataset)

    def submit(self, request: JobRequest, *, force: bool = False) -> Job:
        from labctl.jobs.submit import submit_jobs

        return submit_jobs(self.db, self.config, [request], force=force)[0]

    def batch_script(self, request: JobRequest) -> str:
        from labctl.jobs.submit import batch_script

        return batch_script(self.db, self.config, request)

    def rerun(self, job_id: str, request: RerunRequest) -> Job:
        from labctl.jobs.rerun import rerun_job

        return rerun_job(self.db, self.config, job_id, request)

    def jobs(self, filter: Mapping[str, Any] | None = None, *, limit: int = 0) -> Listing[Job]:
        from labctl.jobs.bulk import parse_filter
        from labctl.jobs.queue import list_jobs

        asked = dict(filter or {})
        dataset = asked.pop("dataset", None)
        selection = parse_filter(self.config.user, **asked)
        return list_jobs(self.db, matching=selection.query(), dataset=dataset, limit=limit)

    def job(self, job_id: str) -> Job:
        from labctl.jobs.queue import read_job

        return read_job(self.db, job_id)

    def heartbeats(self) -> Heartbeats:
        from labctl.stages.heartbeat import heartbeats

        return heartbeats(self.db)

    def bulk(
        self, action: Action, ids: Sequence[str], filter: Mapping[str, Any], *, confirm: bool
    ) -> BulkReport:
        from labctl.access.cancel import bulk_action  # the watchdog's code: only to act

        return bulk_action(
            self.db, self.config, action, ids, filter, self.config.user, confirm=confirm
        )

    def users(self) -> list[User]:
        from labctl.users import list_users

        return list_users(self.db)

    def user(self, username: str) -> User:
        from labctl.users import get_user

        return get_user(self.db, username)

    def add_user(self, user: NewUser) -> User:
        from labctl.users import add_user

        return add_user(
            self.db,
            user.username,
            full_name=user.full_name,
            email=user.email,
            role=user.role,
            hpc_accounts=user.hpc_accounts,
            password=user.password,
        )

    def set_role(self, username: str, role: str) -> None:
        from labctl.users import set_role

        set_role(self.db, username, role)

    def set_password(self, username: str, password: str, current: str | None = None) -> None:
        from labctl.users import set_password

        set_password(self.db, username, password)

    def new_token(self, username: str, days: float | None = None) -> str:
        from labctl.users import create_token

        return create_token(self.db, username, days)

    def notify_of(self, username: str) -> Recipient:
        from labctl.users import notify_settings

        return notify_settings(self.db, username, actor=self.config.user)

    def set_notify(self, username: str, mode: str | None, webhook: str | None) -> None:
        from labctl.users import get_user, set_notify

        get_user(self.db, username)
        set_notify(self.db, username, mode, webhook, actor=self.config.user)

    def usage(self, by: Sequence[str], since: str | None) -> UsageReport:
        from labctl.jobs.usage import usage_report

        return usage_report(self.db, by, since)

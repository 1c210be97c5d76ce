"""The command seam over SSH: a runner whose commands ride the cluster's session."""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Sequence

from labctl.compute.transport.runner import (
    ConnectError,
    Result,
    TransportError,
    checked,
    write_remote_file,
)
from labctl.compute.transport.sessions import (
    Session,
    SessionDownError,
    Sessions,
    connect_hint,
    ssh_error,
)
from labctl.compute.transport.target import SSHTarget, ssh_command


class SSHRunner:
    """Runs commands on a cluster through its session, with BatchMode: never a prompt.

    The session is checked once (on first use): a key cluster's is opened if it is down, an
    interactive cluster's raises SessionDownError, then and on every later call. A cluster
    found unreachable raises its ConnectError again on every later call (`fresh` too): an
    outage costs a run one connection attempt, not one per job.
    """

    def __init__(self, target: SSHTarget, sessions: Sessions | None = None) -> None:
        self.target = target
        self.sessions = sessions or Sessions()
        self.ssh_processes = 0
        self._session: Session | None = None
        self._unreachable: ConnectError | None = None

    def session(self, *, fresh: bool = False) -> Session:
        """The session, as checked on first use (or now, with fresh)."""
        if self._session is None or fresh:
            self.ssh_processes += 1
            self._session = self.sessions.status(self.target)
        return self._session

    def require_session(self, *, fresh: bool = False) -> None:
        """Raise SessionDownError if an interactive cluster's session is down; open a key
        cluster's session if it is."""
        if self._unreachable is not None:
            raise self._unreachable
        if self.session(fresh=fresh).up:
            return
        if self.target.auth == "interactive":
            name = self.target.name
            raise SessionDownError(f"no session to {name}: {connect_hint(name)}")
        self.ssh_processes += 1
        try:
            self._session = self.sessions.open_batch(self.target)
        except ConnectError as exc:
            self._unreachable = exc
            raise

    def down_since(self) -> dt.datetime:
        """Since when this cluster cannot be reached (see `Sessions.down_since`)."""
        return self.sessions.down_since(self.target)

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result:
        """Run argv remotely as shlex.join(argv), so the remote shell sees every argument quoted."""
        self.require_session()
        args = tuple(argv)
        command = [*ssh_command(self.target), "--", self.target.destination, shlex.join(args)]
        self.ssh_processes += 1
        done = self.sessions.local.run(command, check=False, timeout=timeout, input=input)
        result = Result(args, done.returncode, done.stdout, done.stderr)
        if result.returncode == 255:
            error = ssh_error(self.target, result)
            if (error is None or self.target.auth == "interactive") and not self.session(
                fresh=True
            ).up:  # a session that goes away under a command says nothing
                error = self._dropped()
            if isinstance(error, ConnectError):
                self._unreachable = error
            if error is not None:
                raise error
        return checked(result, check)

    def _dropped(self) -> TransportError:
        name = self.target.name
        if self.target.auth == "interactive":
            return SessionDownError(f"the session to {name} dropped: {connect_hint(name)}")
        return ConnectError(f"cannot reach {name}: the session dropped")

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        """Write a text file on the cluster atomically (a temporary file renamed over it)."""
        write_remote_file(self, path, content, mode)

    def read_file(self, path: str) -> str:
        """Read a text file on the cluster (FileNotFoundError if there is none)."""
        done = self.run(["cat", "--", path], check=False)
        if done.returncode != 0 and "No such file" in done.stderr:
            raise FileNotFoundError(path)
        return checked(done, True).stdout

    def close(self) -> None:
        """Nothing to release: the session outlives the run."""

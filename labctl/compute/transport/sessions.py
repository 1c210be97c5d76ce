"""The sessions of clusters: open one on the user's terminal (`labctl connect`: the person
answers ssh's own password and one-time-password prompts, labctl never sees them), open a key
cluster's by itself, check, expire and close them; and what ssh's failures mean."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from labctl.compute.transport.runner import (
    AuthError,
    CommandError,
    ConnectError,
    HostKeyError,
    LocalRunner,
    Result,
    TransportError,
)
from labctl.compute.transport.target import Auth, SSHTarget, escape, ssh_command

# ssh's own diagnostics (exit 255): anything else on stderr came from the remote command.
_SSH_ERROR = re.compile(
    r"^ssh: |^kex_exchange_identification|^Connection (closed|reset|timed out|refused)|"
    r"Host key verification failed|: Permission denied \(|^Control socket|^mux_client|"
    r"^client_loop|^Bad owner|^Timeout, server|^Connection to \S+ closed|"
    r"^No \S+ host key is known|^@@@@|^ssh_exchange_identification|banner exchange"
)
_UNKNOWN_HOST = re.compile(r"No (\S+) host key is known for (\S+) and you have requested")
_CHANGED_HOST = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for \S+ has changed")
_DENIED = re.compile(r"Permission denied \(([a-z,-]+)\)")
_MASTER_PID = re.compile(r"Master running \(pid=(\d+)\)")
# ssh could not connect at all: the host (or a hop) refused, did not answer, or hung up before
# the login. An outage to wait out, never an error of what was to run there.
_NO_CONNECTION = re.compile(
    r"^ssh: connect to host |^ssh: Could not resolve hostname |^kex_exchange_identification|"
    r"^ssh_exchange_identification|^Connection (closed|reset) by \S+ port \d+|"
    r"^Connection timed out during banner exchange|^channel \d+: open failed: connect failed",
    re.MULTILINE,
)


class SessionDownError(TransportError):
    """The cluster's session is not open (never, lapsed, or dropped): its jobs wait for
    `labctl connect`, without failing and without spending a retry."""

    transient = True


@dataclass(frozen=True)
class Session:
    """What is known of one cluster's session: up or down, since and until when, and how."""

    cluster: str
    up: bool
    auth: Auth
    via: str
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    pid: int | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "up": self.up,
            "auth": self.auth,
            "via": self.via or None,
            "since": self.since,
            "until": self.until,
            "pid": self.pid,
            "detail": self.detail,
        }


def connect_hint(cluster: str) -> str:
    return f"run `labctl connect {cluster}`"


def waiting_message(cluster: str) -> str:
    """What the job list and the job page say of a job whose cluster has no session."""
    return f"waiting for a session to {cluster}: {connect_hint(cluster)}"


def outage_message(cluster: str, since: dt.datetime) -> str:
    """What the job list and the job page say of a job whose cluster cannot be reached: the
    same for every job of one outage (its notice is told once)."""
    return (
        f"waiting for {cluster}: unreachable since {since:%Y-%m-%d %H:%M:%S} UTC; "
        "it goes on by itself once the cluster is back"
    )


def could_not_connect(text: str) -> bool:
    """Whether ssh's diagnostics in `text` say it could not connect to the host at all."""
    return _NO_CONNECTION.search(text.replace("\r", "")) is not None


def _record_path(target: SSHTarget) -> Path:
    return target.stem.with_name(target.stem.name + ".json")


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def _opened_at(target: SSHTarget, pid: int) -> dt.datetime | None:
    """When the master `pid` was opened: labctl's record of it, else the socket's birth."""
    try:
        record = json.loads(_record_path(target).read_text())
        if record.get("pid") == pid:
            return _utc(record["opened_at"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return dt.datetime.fromtimestamp(target.control_path.stat().st_mtime, dt.UTC)
    except OSError:
        return None


def _down_path(target: SSHTarget) -> Path:
    return target.stem.with_name(target.stem.name + ".down")


def _write_record(target: SSHTarget, pid: int | None, now: dt.datetime) -> None:
    record = {"cluster": target.name, "opened_at": now.isoformat(), "via": target.via, "pid": pid}
    path = _record_path(target)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(record))
    partial.chmod(0o600)
    partial.replace(path)


class Sessions:
    """Checks, opens and closes the sessions of clusters, through one local runner."""

    def __init__(self, local: LocalRunner | None = None) -> None:
        self.local = local or LocalRunner()

    def _control(self, target: SSHTarget, operation: str) -> Result:
        argv = [*ssh_command(target), "-O", operation, "--", target.destination]
        return self.local.run(argv, check=False, timeout=15)

    def status(self, target: SSHTarget, now: dt.datetime | None = None) -> Session:
        """The session as its master answers now; an expired one is closed and reported down."""
        now = now or dt.datetime.now(dt.UTC)
        base = Session(target.name, False, target.auth, target.via)
        done = self._control(target, "check")
        found = _MASTER_PID.search(done.stderr + done.stdout)
        if done.returncode != 0 or found is None:
            return replace(base, detail="no session")
        pid = int(found[1])
        since = _opened_at(target, pid) or now
        until = since + dt.timedelta(seconds=target.lifetime_seconds)
        if until <= now:
            self._control(target, "exit")
            expired = f"expired at {until:%Y-%m-%d %H:%M} UTC"
            return replace(base, since=since, until=until, detail=expired)
        _down_path(target).unlink(missing_ok=True)  # reached: an outage is over
        return Session(target.name, True, target.auth, target.via, since, until, pid)

    def open_batch(self, target: SSHTarget) -> Session:
        """Open a key cluster's session without any prompt (the watchdog does this itself)."""
        argv = [*ssh_command(target, "open"), "--", target.destination, "true"]
        done = self.local.run(argv, check=False, timeout=60)
        if done.returncode != 0:
            raise ssh_error(target, done) or CommandError(done)
        return self._opened(target)

    def connect(self, target: SSHTarget, *, accept_host_key: bool = False) -> Session:
        """Open the session on this terminal: ssh itself asks for password and one-time password
        (and, with accept_host_key, whether to add an unknown host key, showing its fingerprint)."""
        strict = "ask" if accept_host_key else "yes"
        argv = [*ssh_command(target, "connect", strict=strict), "--", target.destination, "true"]
        done = self.local.interactive(argv)
        if done.returncode != 0:
            raise ssh_error(target, done, connecting=True) or CommandError(done)
        return self._opened(target)

    def _opened(self, target: SSHTarget) -> Session:
        now = dt.datetime.now(dt.UTC)
        done = self._control(target, "check")
        found = _MASTER_PID.search(done.stderr + done.stdout)
        if found is None:
            raise ConnectError(f"{target.name}: the login worked but no session stayed open")
        _write_record(target, int(found[1]), now)
        return self.status(target, now)

    def down_since(self, target: SSHTarget) -> dt.datetime:
        """Since when the cluster cannot be reached, as first noted by this account here (now,
        and noted, if this is the first time): until its session is next seen up."""
        path = _down_path(target)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(now.isoformat())
        try:
            os.link(partial, path)  # the first run to note it wins; the others read its time
        except FileExistsError:
            pass
        finally:
            partial.unlink()
        try:
            return _utc(path.read_text().strip())
        except (OSError, ValueError):  # damaged, or ended meanwhile: it starts now
            partial.write_text(now.isoformat())
            partial.replace(path)
            return now

    def close(self, target: SSHTarget) -> bool:
        """End the session; False if there was none."""
        done = self._control(target, "exit")
        _record_path(target).unlink(missing_ok=True)
        return done.returncode == 0

    def close_all(self, directory: Path) -> int:
        """End every session whose socket is in `directory`; return how many were open."""
        ended = 0
        for path in directory.iterdir():
            try:
                is_socket = stat.S_ISSOCK(path.lstat().st_mode)
            except FileNotFoundError:  # a temporary file of ssh's or labctl's, gone meanwhile
                continue
            if is_socket:
                argv = ["ssh", "-o", f"ControlPath={escape(str(path))}", "-O", "exit", path.name]
                ended += self.local.run(argv, check=False, timeout=15).returncode == 0
                path.with_name(path.name + ".json").unlink(missing_ok=True)
        return ended


def _hop_of(spec: str, target: SSHTarget) -> tuple[str, int]:
    """The host and port ssh names in a host-key message ("[host]:port" or "host")."""
    if spec.startswith("[") and "]:" in spec:
        host, _, port = spec[1:].partition("]:")
        return host, int(port)
    return spec, 22


def _fingerprint(target: SSHTarget, spec: str, local: LocalRunner) -> str:
    """The unknown key's fingerprint, where the host is directly reachable (not behind a hop)."""
    host, port = _hop_of(spec, target)
    scanned = local.run(["ssh-keyscan", "-T", "5", "-p", str(port), host], check=False, timeout=15)
    if scanned.returncode != 0 or not scanned.stdout.strip():
        return ""
    keys = local.run(["ssh-keygen", "-l", "-f", "-"], input=scanned.stdout, check=False, timeout=15)
    # ssh-keygen -l prints "BITS SHA256:... HOST (TYPE)" per key.
    return "; ".join(
        f"{fields[-1].strip('()')} {fields[1]}"
        for fields in (line.split() for line in keys.stdout.splitlines())
        if len(fields) >= 3
    )


def ssh_error(
    target: SSHTarget, result: Result, *, connecting: bool = False
) -> TransportError | None:
    """The typed error for an ssh that failed before or instead of running the command, or None
    when exit 255 came from the remote command itself."""
    text = result.stderr.replace("\r", "")
    if result.returncode != 255 and not connecting:
        return None
    first = next((line for line in text.splitlines() if _SSH_ERROR.search(line)), None)
    if first is None and not connecting:
        return None
    name = target.name
    if unknown := _UNKNOWN_HOST.search(text):
        kind, spec = unknown[1], unknown[2]
        where = target.known_hosts or "~/.ssh/known_hosts"
        found = _fingerprint(target, spec, LocalRunner())
        shown = f" (it offers {found})" if found else f" ({kind})"
        return HostKeyError(
            f"the host key of {spec} is not in {where}{shown}: compare it with the fingerprints "
            f"the cluster publishes, then run `labctl connect {name} --accept-host-key` "
            "(ssh shows the fingerprint and asks)"
        )
    if _CHANGED_HOST.search(text) or "Host key verification failed" in text:
        return HostKeyError(
            f"the host key of {name} (or of a gateway on the way) changed or cannot be verified: "
            f"ask the cluster's admins before you change {target.known_hosts or 'known_hosts'}"
        )
    if denied := _DENIED.search(text):
        if target.auth == "key":
            return AuthError(f"{target.where} rejected key {target.key_file} ({denied[1]})")
        return AuthError(
            f"{name} refused the login: wrong password or one-time password? "
            f"Nothing was changed; {connect_hint(name)} again"
        )
    if first is not None and first.startswith("Bad owner"):  # ~/.ssh, not the cluster
        return TransportError(f"ssh refuses its own files: {first.strip()}")
    if target.auth == "interactive" and not connecting:
        return SessionDownError(f"the session to {name} is down: {connect_hint(name)}")
    lines = text.strip().splitlines()
    detail = first or (lines[-1] if lines else f"ssh exited {result.returncode}")
    return ConnectError(f"cannot reach {target.where}: {detail.strip()}")

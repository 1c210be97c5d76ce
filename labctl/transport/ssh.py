"""The OpenSSH client, for every SSH use: one ControlMaster session per cluster and local user.

`labctl connect` opens a cluster's session on the user's terminal, where the person answers
ssh's own password and one-time-password prompts (labctl never sees them). Commands, rsync
(`-e`) and sshfs then all ride that session with `BatchMode=yes`: the watchdog never prompts,
and while a session is up it makes no new SSH authentication. A cluster with key
authentication opens its session by itself on first use.

A session to an `interactive` cluster is never replaced by a new login behind the user's back:
the batch options carry `ProxyCommand=false`, which ssh only runs when there is no master to
ride, so that it fails at once without contacting the server.

The sockets, the generated ssh config files (`ssh -F`, which ProxyJump passes on to the hops,
so the gateway is checked against the same known_hosts) and the sessions' records live in one
private (0700) directory with short paths: a Unix socket path is limited to about 104 bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shlex
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

from labctl.transport.runner import (
    AuthError,
    CommandError,
    ConnectError,
    HostKeyError,
    LocalRunner,
    Result,
    TransportError,
    checked,
    write_remote_file,
)

Auth = Literal["key", "interactive"]
Mode = Literal["batch", "open", "connect"]

# ssh creates "<ControlPath>.<16 random characters>" and renames it: both must fit in sun_path.
_SOCKET_MAX: Final = 103 - 17
_SHORT_DIR_MAX: Final = 48
NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,23}$")
"""Cluster names: they name Host blocks and socket files."""
HOP: Final = re.compile(r"^([A-Za-z0-9_.-]+@)?([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$")
"""One ProxyJump hop: [user@]host[:port]."""

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


class SessionDownError(TransportError):
    """The cluster's session is not open (never, lapsed, or dropped): its jobs wait for
    `labctl connect`, without failing and without spending a retry."""

    transient = True


@dataclass(frozen=True)
class SSHTarget:
    """How the system's ssh reaches one cluster account, and where its session lives."""

    name: str  # the cluster's name: the Host of the generated config, the socket's name
    host: str  # the host name, or with `alias_config` a Host of that ssh config file
    directory: str  # the private directory of sockets and generated files
    user: str | None = None
    port: int = 22
    key_file: str | None = None
    known_hosts: str | None = None
    auth: Auth = "key"
    proxy_jump: tuple[str, ...] = ()
    alias_config: str | None = None  # the user's ssh config, which says the rest of the way
    lifetime_seconds: int = 7 * 24 * 3600
    connect_timeout: int = 10  # seconds, for the TCP connection and ssh's banner

    @property
    def alias(self) -> bool:
        return self.alias_config is not None

    @property
    def destination(self) -> str:
        """What ssh, rsync and sshfs are told to connect to."""
        return self.host if self.alias else self.name

    @property
    def stem(self) -> Path:
        """The session's files: the socket itself, `.conf` and `.json` beside it. The name hashes
        where it leads and how it logs in, so a changed host, account, key or known_hosts never
        rides an old session."""
        how = [self.key_file or "", self.known_hosts or "", self.auth, self.alias_config or ""]
        where = "\0".join([self.host, self.user or "", str(self.port), *self.proxy_jump, *how])
        digest = hashlib.sha256(f"{socket.gethostname()}\0{where}".encode()).hexdigest()[:8]
        return Path(self.directory) / f"{self.name}-{digest}"

    @property
    def where(self) -> str:
        """The account in words, for messages."""
        return self.host if self.alias else f"{self.user}@{self.host}:{self.port}"

    @property
    def control_path(self) -> Path:
        return self.stem

    @property
    def via(self) -> str:
        """The gateway(s) in words, or "" for a direct route."""
        return ",".join(self.proxy_jump)


def short_dir(preferred: Path) -> Path:
    """`preferred`, or where socket paths in it would be too long, a short stand-in under /tmp
    that is a function of it (so that cron and a login shell agree)."""
    if len(str(preferred)) <= _SHORT_DIR_MAX:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:8]
    return Path("/tmp") / f"labctl-{os.getuid()}-{digest}"


def private_dir(preferred: Path) -> Path:
    """`short_dir(preferred)`, made private: 0700, ours, no symlink."""
    preferred = short_dir(preferred)
    try:
        preferred.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = preferred.lstat()
    except OSError as exc:
        raise TransportError(f"cannot create the session directory {preferred}: {exc}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise TransportError(f"refusing session directory {preferred}: not a directory of yours")
    if info.st_mode & 0o077:
        raise TransportError(
            f"refusing session directory {preferred}: mode {stat.S_IMODE(info.st_mode):o} lets "
            f"others in (run 'chmod 700 {preferred}')"
        )
    return preferred


def _escape(value: str) -> str:
    """A path in ssh_config or `-o`: `%` starts a token there."""
    return value.replace("%", "%%")


def _config_value(value: str) -> str:
    if any(c in value for c in '"\n\r'):
        raise TransportError(f"{value!r} cannot be written into an ssh config (quote or newline)")
    return f'"{_escape(value)}"'


def config_text(target: SSHTarget, *, strict: str = "yes") -> str:
    """The generated ssh config: where the cluster is and how it is checked. `Host *` applies to
    the ProxyJump hops too, which ssh starts with the same `-F` file."""
    t = target
    lines = [f"# Written by labctl for cluster {t.name}; rewritten on use.", f"Host {t.name}"]
    lines += [f"  HostName {t.host}", f"  Port {t.port}"]
    if t.user:
        lines.append(f"  User {t.user}")
    if t.proxy_jump:
        lines.append(f"  ProxyJump {','.join(t.proxy_jump)}")
    if t.auth == "key":
        lines += [f"  IdentityFile {_config_value(t.key_file or '~/.ssh/id_ed25519')}"]
        lines += ["  IdentitiesOnly yes", "  PreferredAuthentications publickey"]
    else:
        lines += ["  PubkeyAuthentication no"]
        lines += ["  PreferredAuthentications keyboard-interactive,password"]
    lines += ["Host *", f"  StrictHostKeyChecking {strict}"]
    # The hops get -F but none of the command line: say here that they must not prompt either
    # (key clusters), or ask once and fail clearly on a wrong answer (interactive ones).
    lines.append("  BatchMode yes" if t.auth == "key" else "  NumberOfPasswordPrompts 1")
    if t.known_hosts:
        lines.append(f"  UserKnownHostsFile {_config_value(t.known_hosts)}")
    lines += ["  ServerAliveInterval 15", "  ServerAliveCountMax 4"]
    lines.append(f"  ConnectTimeout {t.connect_timeout}")
    return "\n".join(lines) + "\n"


def config_file(target: SSHTarget, *, strict: str = "yes") -> Path:
    """Write the generated config if it changed (atomically, 0600) and return its path."""
    path = target.stem.with_name(
        target.stem.name + (".conf" if strict == "yes" else f".{strict}.conf")
    )
    text = config_text(target, strict=strict)
    try:
        if path.exists() and path.read_text() == text:
            return path
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        partial.replace(path)
    except OSError as exc:
        raise TransportError(f"cannot write the ssh config {path}: {exc}") from None
    return path


def ssh_options(target: SSHTarget, mode: Mode = "batch") -> list[str]:
    """The `-o` options of one use: `batch` rides the session, `open` opens a key cluster's
    session without a prompt, `connect` opens one on the user's terminal."""
    if len(str(target.control_path)) > _SOCKET_MAX:
        raise TransportError(f"the session socket path {target.control_path} is too long")
    options = [f"ControlPath={_escape(str(target.control_path))}"]
    if mode == "batch":
        options += ["ControlMaster=no", "BatchMode=yes"]
        if target.auth == "interactive":
            options.append("ProxyCommand=false")  # no session: fail at once, never a new login
    else:
        persist = f"ControlPersist={target.lifetime_seconds}"
        options += ["ControlMaster=auto", persist, f"BatchMode={'yes' if mode == 'open' else 'no'}"]
    if target.alias:  # no generated file: the user's ssh config says the rest
        options += ["ServerAliveInterval=15", "ServerAliveCountMax=4"]
        options.append(f"ConnectTimeout={target.connect_timeout}")
    return options


def ssh_command(target: SSHTarget, mode: Mode = "batch", *, strict: str = "yes") -> list[str]:
    """`ssh` with every option but the destination: for commands, for rsync's `-e`, for sshfs.
    The `-F` file is the generated one, or the user's own for an alias: ssh passes it to hops."""
    config = target.alias_config or str(config_file(target, strict=strict))
    argv = ["ssh", "-F", config]
    for option in ssh_options(target, mode):
        argv += ["-o", option]
    return argv


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
                argv = ["ssh", "-o", f"ControlPath={_escape(str(path))}", "-O", "exit", path.name]
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
    if target.auth == "interactive" and not connecting:
        return SessionDownError(f"the session to {name} is down: {connect_hint(name)}")
    lines = text.strip().splitlines()
    detail = first or (lines[-1] if lines else f"ssh exited {result.returncode}")
    return ConnectError(f"cannot reach {target.where}: {detail.strip()}")


class SSHRunner:
    """Runs commands on a cluster through its session, with BatchMode: never a prompt.

    The session is checked once (on first use): a key cluster's is opened if it is down, an
    interactive cluster's raises SessionDownError, then and on every later call.
    """

    def __init__(self, target: SSHTarget, sessions: Sessions | None = None) -> None:
        self.target = target
        self.sessions = sessions or Sessions()
        self.ssh_processes = 0
        self._session: Session | None = None

    def session(self, *, fresh: bool = False) -> Session:
        """The session, as checked on first use (or now, with fresh)."""
        if self._session is None or fresh:
            self.ssh_processes += 1
            self._session = self.sessions.status(self.target)
        return self._session

    def require_session(self, *, fresh: bool = False) -> None:
        """Raise SessionDownError if an interactive cluster's session is down; open a key
        cluster's session if it is."""
        if self.session(fresh=fresh).up:
            return
        if self.target.auth == "interactive":
            name = self.target.name
            raise SessionDownError(f"no session to {name}: {connect_hint(name)}")
        self.ssh_processes += 1
        self._session = self.sessions.open_batch(self.target)

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

"""Where a cluster is and how every ssh use reaches it: the generated ssh config (`ssh -F`,
which ProxyJump passes on to the hops, so a gateway is checked against the same known_hosts) and
the `-o` options of commands, rsync's `-e` and sshfs, all riding one ControlMaster socket per
cluster and local user. The socket and the generated files live in one private (0700) directory
with short paths: a Unix socket path is limited to about 104 bytes.

A session to an `interactive` cluster is never replaced by a new login behind the user's back:
the batch options carry `ProxyCommand=false`, which ssh only runs when there is no master to
ride, so that it fails at once without contacting the server.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from labctl.compute.transport.runner import TransportError

Auth = Literal["key", "interactive"]
Mode = Literal["batch", "open", "connect"]

# ssh creates "<ControlPath>.<16 random characters>" and renames it: both must fit in sun_path.
_SOCKET_MAX: Final = 103 - 17
_SHORT_DIR_MAX: Final = 48


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


def escape(value: str) -> str:
    """A path in ssh_config or `-o`: `%` starts a token there."""
    return value.replace("%", "%%")


def _config_value(value: str) -> str:
    if any(c in value for c in '"\n\r'):
        raise TransportError(f"{value!r} cannot be written into an ssh config (quote or newline)")
    return f'"{escape(value)}"'


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
    options = [f"ControlPath={escape(str(target.control_path))}"]
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

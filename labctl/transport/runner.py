"""The command seam: run argv lists and move small files, locally or over one SSH connection."""

from __future__ import annotations

import os
import select
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import paramiko

from labctl.errors import LabctlError

_CHUNK = 65536


class TransportError(LabctlError):
    """Base class: running a command or reaching a host failed."""

    transient: ClassVar[bool] = False


class ConnectError(TransportError):
    """The host could not be reached (refused, unreachable, timed out, dropped): retry later."""

    transient = True


class HostKeyError(TransportError):
    """The host key is unknown or changed: a human must check and update known_hosts."""


class AuthError(TransportError):
    """The key was rejected or could not be loaded: a human must fix the credentials."""


class CommandTimeoutError(TransportError):
    """A command did not finish within its timeout."""

    transient = True


class CommandError(TransportError):
    """A command run with check=True exited non-zero."""

    def __init__(self, result: Result) -> None:
        lines = result.stderr.strip().splitlines()
        first = lines[0] if lines else "(no stderr)"
        super().__init__(f"{shlex.join(result.argv)} exited {result.returncode}: {first}")
        self.result = result


@dataclass(frozen=True)
class Result:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SSHTarget:
    """A remote account reached with one key, verified against one known_hosts file."""

    host: str
    user: str
    key_file: str
    known_hosts: str
    port: int = 22


class Runner(Protocol):
    """Runs commands and reads/writes small text files on one machine."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result:
        """Run argv (no shell); raise CommandError if check and it exits non-zero."""
        ...

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        """Write a UTF-8 text file and set its permission bits."""
        ...

    def read_file(self, path: str) -> str:
        """Read a UTF-8 text file."""
        ...

    def close(self) -> None:
        """Release connections; the runner may not be used afterwards."""
        ...


def _checked(result: Result, check: bool) -> Result:
    if check and result.returncode != 0:
        raise CommandError(result)
    return result


class LocalRunner:
    """Runs commands on this machine with subprocess (argv lists, never a shell)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result:
        """Run argv; a missing program gives returncode 127 as a shell would."""
        args = tuple(argv)
        try:
            done = subprocess.run(
                args,
                input=input,
                stdin=subprocess.DEVNULL if input is None else None,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
            )
        except FileNotFoundError as exc:
            return _checked(Result(args, 127, "", f"{args[0]}: {exc.strerror}"), check)
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeoutError(f"{shlex.join(args)} timed out after {timeout} s") from exc
        return _checked(Result(args, done.returncode, done.stdout, done.stderr), check)

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        """Write a text file and chmod it."""
        Path(path).write_text(content, encoding="utf-8")
        os.chmod(path, mode)

    def read_file(self, path: str) -> str:
        """Read a text file."""
        return Path(path).read_text(encoding="utf-8")

    def close(self) -> None:
        """Nothing to release."""


class _RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    """RejectPolicy that raises a HostKeyError naming the host entry and the file to fix."""

    def __init__(self, known_hosts: str) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise HostKeyError(
            f"host key of {hostname} ({key.get_name()} {key.fingerprint}) "
            f"is not in {self._known_hosts}"
        )


class SSHRunner:
    """Runs commands over one lazily opened, reused paramiko connection."""

    def __init__(self, target: SSHTarget, *, connect_timeout: float = 10.0) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.connections_opened = 0
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def _transport(self) -> paramiko.Transport:
        """The live connection, (re)opened if there is none or the last one dropped."""
        transport = self._client.get_transport() if self._client else None
        if transport is not None and transport.is_active():
            return transport
        self.close()
        self._client = self._connect()
        self.connections_opened += 1
        transport = self._client.get_transport()
        if transport is None:
            raise ConnectError(f"no transport to {self._where()} after connecting")
        return transport

    def _where(self) -> str:
        t = self.target
        return f"{t.user}@{t.host}:{t.port}"

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        try:
            self._open(client)
        except BaseException:
            client.close()
            raise
        return client

    def _open(self, client: paramiko.SSHClient) -> None:
        """Verify the host against known_hosts only and log in with the key only."""
        t = self.target
        try:
            client.load_host_keys(t.known_hosts)
        except OSError as exc:
            raise HostKeyError(f"cannot read known_hosts {t.known_hosts}: {exc}") from exc
        client.set_missing_host_key_policy(_RejectUnknownHost(t.known_hosts))
        try:
            # Loaded here: given key_filename, paramiko may report a rejected
            # RSA key as a failure to parse it as the other key types.
            key = paramiko.PKey.from_path(t.key_file)
        except (OSError, paramiko.SSHException) as exc:
            raise AuthError(f"cannot load key {t.key_file}: {exc}") from exc
        try:
            sock = socket.create_connection((t.host, t.port), timeout=self.connect_timeout)
            # paramiko leaves Nagle on: each command then waits ~40 ms for a delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(
                t.host,
                port=t.port,
                username=t.user,
                pkey=key,
                sock=sock,
                allow_agent=False,
                look_for_keys=False,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
            )
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"host key of {exc.hostname} changed: got {exc.key.fingerprint}, "
                f"{t.known_hosts} has {exc.expected_key.fingerprint}"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise AuthError(f"{self._where()} rejected key {t.key_file}: {exc}") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectError(f"cannot connect to {self._where()}: {exc}") from exc

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result:
        """Run argv remotely as shlex.join(argv), so the remote shell sees every argument quoted."""
        args = tuple(argv)
        command = shlex.join(args)
        deadline = None if timeout is None else time.monotonic() + timeout
        transport = self._transport()
        try:
            chan = transport.open_session(timeout=self.connect_timeout)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectError(f"cannot open a session on {self._where()}: {exc}") from exc
        with chan:
            try:
                chan.exec_command(command)
                if input is not None:
                    chan.sendall(input.encode())
                chan.shutdown_write()
                stdout, stderr, code = _collect(chan, deadline)
            except TimeoutError as exc:
                raise CommandTimeoutError(f"{command} timed out after {timeout} s") from exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise ConnectError(f"connection to {self._where()} lost: {exc}") from exc
        if code == -1 and not transport.is_active():
            raise ConnectError(f"connection to {self._where()} lost while running {command}")
        return _checked(Result(args, code, stdout, stderr), check)

    def _sftp_client(self) -> paramiko.SFTPClient:
        transport = self._transport()
        if self._sftp is None:
            self._sftp = paramiko.SFTPClient.from_transport(transport)
            if self._sftp is None:
                raise ConnectError(f"cannot open SFTP on {self._where()}")
        return self._sftp

    def write_file(self, path: str, content: str, mode: int = 0o644) -> None:
        """Write a text file over SFTP on the shared connection, then chmod it."""
        sftp = self._sftp_client()
        with sftp.open(path, "w") as f:
            f.write(content.encode())
        sftp.chmod(path, mode)

    def read_file(self, path: str) -> str:
        """Read a text file over SFTP on the shared connection."""
        with self._sftp_client().open(path, "r") as f:
            return f.read().decode("utf-8")

    def close(self) -> None:
        """Close the SFTP session and the connection; a later call reconnects."""
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before deadline (None: no limit); TimeoutError once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _collect(chan: paramiko.Channel, deadline: float | None) -> tuple[str, str, int]:
    """Read stdout and stderr together (so neither can block the other) and the exit code."""
    out, err = bytearray(), bytearray()
    while True:
        done = chan.eof_received or chan.closed  # read before draining: all data precedes EOF
        while chan.recv_ready():
            out += chan.recv(_CHUNK)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(_CHUNK)
        if done:
            break
        select.select([chan], [], [], _remaining(deadline))
    if not chan.status_event.wait(_remaining(deadline)):
        raise TimeoutError
    # -1 means no exit status: the command was killed by a signal or the connection dropped.
    code = chan.recv_exit_status()
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), code

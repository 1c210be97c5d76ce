"""Helpers for the MPCDF-like login host of the testbed (scripts/testbed.sh, then source env.sh).

- `next_hotp(user)`: the next one-time password pam_oath accepts for a counter-based (HOTP) account.
- `totp(seed)`: the current time-based (TOTP) code of a hex seed.
- `run_on_pty(argv, answers)`: run a command on a real pseudo-terminal (its controlling terminal,
  so that ssh prompts on /dev/tty) and answer its prompts in order.

pam_oath keeps, per account, a line `HOTP USER - HEXSEED COUNTER LAST-OTP TIME` in its users file
(`$HPC_OATH_USERS`, root 0600). A fresh line (`HOTP USER - HEXSEED`) accepts counters 0..window
(window=20 in /etc/pam.d/sshd-otp); a successful OTP check rewrites the line (tab-separated) with
COUNTER = the counter just used and LAST-OTP = its code, and from then on it accepts the codes for
COUNTER+1 .. COUNTER+window (LAST-OTP itself is refused as a replay). `next_hotp` reads that line,
so it works
across processes and test sessions; a code handed out but not (yet) used is remembered (a small
reservation file next to the users file, under a lock), so two calls before a login give two
different codes, both accepted as long as they are used in the order handed out.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import pty
import re
import select
import signal
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

WINDOW = 20
"""pam_oath's `window=` in /etc/pam.d/sshd-otp: how far past its counter a code may be."""


def hotp(seed_hex: str, counter: int, digits: int = 6) -> str:
    """RFC 4226: the HOTP code of a hex seed at `counter` (what `oathtool --hotp -c N` prints)."""
    mac = hmac.new(bytes.fromhex(seed_hex), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def totp(seed_hex: str, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    """RFC 6238: the TOTP code of a hex seed at time `at` (default now), like `oathtool --totp`."""
    return hotp(seed_hex, int((time.time() if at is None else at) // step), digits)


@dataclass(frozen=True)
class OathAccount:
    """One line of pam_oath's users file."""

    kind: str  # "HOTP" (counter) or "HOTP/T30/6" (time-based)
    user: str
    seed: str
    counter: int  # HOTP: the counter last used (0 if never); TOTP: the last time step used
    last_otp: str | None  # None if the account never logged in
    last_login: float | None  # when LAST-OTP was accepted (epoch seconds)

    @property
    def next_counter(self) -> int:
        """HOTP: the lowest counter pam_oath accepts now."""
        return self.counter if self.last_otp is None else self.counter + 1


def users_file() -> Path:
    return Path(os.environ["HPC_OATH_USERS"])


def read_account(user: str, path: Path | None = None) -> OathAccount:
    """`user`'s line of the pam_oath users file (readable by root only)."""
    path = path or users_file()
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.startswith("#") and fields[1] == user:
            counter = int(fields[4]) if len(fields) > 4 else 0
            last = fields[5] if len(fields) > 5 else None
            when = None
            if len(fields) > 6:  # e.g. 2026-12-01T08:43:58L (L: local time)
                when = time.mktime(time.strptime(fields[6].rstrip("L"), "%Y-%m-%dT%H:%M:%S"))
            return OathAccount(fields[0], fields[1], fields[3], counter, last, when)
    raise KeyError(f"{user} is not in {path}")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def next_hotp(user: str) -> str:
    """The next HOTP code pam_oath will accept for `user` (a counter-based account).

    Consecutive calls with no login in between give consecutive codes (all inside pam_oath's
    window); after a login that used a code, counting starts again from the users file.
    """
    path = users_file()
    reservation = path.with_name(f"{path.name}.{user}.handed-out")
    with _locked(path.with_name(f"{path.name}.labctl-tests.lock")):
        account = read_account(user, path)
        if not account.kind == "HOTP":
            raise ValueError(f"{user} is a {account.kind} account, not a counter (HOTP) one")
        base = counter = account.next_counter
        try:
            handed = json.loads(reservation.read_text())
        except (OSError, ValueError):
            handed = None
        if handed and handed["base"] == base:  # no login since the last code handed out
            counter = handed["counter"] + 1
        if counter - base >= WINDOW:
            counter = base  # many codes handed out and never used: start again
        reservation.write_text(json.dumps({"base": base, "counter": counter}))
        return hotp(account.seed, counter)


def fresh_totp(user: str) -> str:
    """The current TOTP code of `user`, after waiting (up to 60 s) for a 30 s step later than the
    last login's: pam_oath refuses the code it accepted last and the codes of earlier steps, so a
    second TOTP login in the same step (e.g. a test session run again at once) would fail."""
    account = read_account(user)
    last_step = -1 if account.last_login is None else int(account.last_login // 30)
    while True:
        code = totp(account.seed)
        if code != account.last_otp and int(time.time() // 30) > last_step:
            return code
        time.sleep(30 - time.time() % 30 + 0.2)


class PtyTimeout(AssertionError):
    """A command on the pseudo-terminal did not print the expected prompt (or end) in time."""


@dataclass
class PtyResult:
    transcript: str  # everything the command wrote to the terminal (\r\n line ends)
    returncode: int  # 128+N if killed by signal N (as a shell reports it)
    answered: int  # how many of the prompts were seen and answered
    prompts: list[str] = field(default_factory=list)  # the text each answer was given to

    def __str__(self) -> str:
        return f"exit {self.returncode}, answered {self.answered}:\n{self.transcript}"


def run_on_pty(
    argv: Sequence[str],
    answers: Sequence[tuple[str, str]] = (),
    *,
    timeout: float = 30,
    env: Mapping[str, str] | None = None,
    require_all: bool = True,
) -> PtyResult:
    """Run argv with a new pseudo-terminal as its controlling terminal and stdin/stdout/stderr.

    `answers` are (prompt regex, answer) pairs taken in order: once the output since the previous
    answer matches the regex, the answer and a newline are typed. Then the output is read until
    the command exits. Raises PtyTimeout (with the transcript so far) after `timeout` s in all; with
    `require_all`, also raises if the command exits before all prompts were answered.
    """
    deadline = time.monotonic() + timeout
    environ = dict(env) if env is not None else dict(os.environ)
    pid, fd = pty.fork()
    if pid == 0:  # the child, a session leader with the terminal as its controlling terminal
        _run_as_job(argv, environ)
    out = b""
    mark = 0  # where the output not yet matched against a prompt starts
    answered = 0
    prompts: list[str] = []
    status: int | None = None
    eof = False
    try:
        while True:
            if answered < len(answers):
                pattern, answer = answers[answered]
                text = out[mark:].decode(errors="replace")
                if re.search(pattern, text):
                    os.write(fd, answer.encode() + b"\n")
                    prompts.append(text)
                    mark = len(out)
                    answered += 1
                    continue
            if status is None:
                waited, raw = os.waitpid(pid, os.WNOHANG)
                if waited:
                    status = raw
            if eof or (status is not None and not _readable(fd, 0.05)):
                break  # exited and nothing more to read
            if time.monotonic() > deadline:
                wanted = answers[answered][0] if answered < len(answers) else "the command to end"
                raise PtyTimeout(
                    f"{argv[0]}: no {wanted!r} after {timeout} s:\n{out.decode(errors='replace')}"
                )
            if _readable(fd, 0.05):
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: every holder of the terminal closed it
                    chunk = b""
                if chunk:
                    out += chunk
                else:
                    eof = True
        if status is None:  # the terminal closed first: wait for the exit status
            while status is None:
                waited, raw = os.waitpid(pid, os.WNOHANG)
                if waited:
                    status = raw
                    break
                if time.monotonic() > deadline:
                    raise PtyTimeout(f"{argv[0]}: closed the terminal but did not exit:\n{out!r}")
                time.sleep(0.02)
    finally:
        if status is None:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(fd)
    result = PtyResult(out.decode(errors="replace"), os.waitstatus_to_exitcode(status), answered,
                       prompts)  # fmt: skip
    if require_all and answered < len(answers):
        raise AssertionError(f"{argv[0]} ended before prompt {answers[answered][0]!r}: {result}")
    return result


def _run_as_job(argv: Sequence[str], environ: dict[str, str]) -> None:
    """In the pty child: run argv as an interactive shell runs a job, and exit with its status.

    The command gets a process group of its own as the terminal's foreground group; when it ends,
    the terminal goes back to this session leader before it exits. Otherwise the kernel would send
    SIGHUP to the command's group when the session leader ends, killing what it left running in
    that group (e.g. the ProxyJump `ssh -W` of a ControlPersist master), which a real terminal
    with a shell does not do.
    """
    try:
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # tcsetpgrp from the background
        job = os.fork()
        if job == 0:
            os.setpgid(0, 0)
            os.tcsetpgrp(0, os.getpgrp())
            signal.signal(signal.SIGTTOU, signal.SIG_DFL)
            os.execvpe(argv[0], list(argv), environ)
        with suppress(OSError):  # both set it, as shells do: whichever runs first
            os.setpgid(job, job)
        _, status = os.waitpid(job, 0)
        os.tcsetpgrp(0, os.getpgrp())
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    except BaseException:
        os._exit(127)


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


PASSWORD_PROMPT = r"[Pp]assword: ?$"
"""pam_unix's prompt as ssh shows it: `(USER@HOST) Password: `."""
OTP_PROMPT = r"One-time password \(OATH\) for `[^']+': ?$"
"""pam_oath's prompt as ssh shows it: "(USER@HOST) One-time password (OATH) for `USER': "."""


def login_answers(user: str, password: str, code: str | None = None) -> list[tuple[str, str]]:
    """The answers for one password + OTP login of `user` (code: next_hotp(user) by default)."""
    return [
        (rf"\({re.escape(user)}@[^)]*\) {PASSWORD_PROMPT}", password),
        (rf"\({re.escape(user)}@[^)]*\) {OTP_PROMPT}", next_hotp(user) if code is None else code),
    ]


def connect_answers(*, via_gateway: bool = True) -> list[tuple[str, str]]:
    """What a person types at `labctl connect` of the testbed's MFA cluster: password and OTP
    for the gateway (unless direct), then for the login host."""
    env = os.environ
    host = login_answers(env["HPC_MFA_USER"], env["HPC_MFA_PASSWORD"])
    if not via_gateway:
        return host
    return login_answers(env["HPC_GW_USER"], env["HPC_GW_PASSWORD"]) + host

"""The OpenSSH layer's pure parts: generated config, options, the private directory, and how
ssh's diagnostics become typed errors (texts as OpenSSH 9.2 prints them on the testbed)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from labctl.compute.transport import (
    AuthError,
    ConnectError,
    Result,
    SessionDownError,
    Sessions,
    SSHRunner,
    SSHTarget,
    TransportError,
    private_dir,
    ssh_command,
    ssh_options,
)
from labctl.compute.transport.sessions import ssh_error
from labctl.compute.transport.target import config_text
from labctl.config import ClusterConfig, Config
from tests.testbed import key_target, needs_testbed


def target(tmp_path: Path, **changes: object) -> SSHTarget:
    settings: dict[str, object] = {
        "name": "raven",
        "host": "raven.mpcdf.mpg.de",
        "directory": str(private_dir(tmp_path / "s")),
        "user": "abc123",
        "key_file": "/home/abc/.ssh/id 100%",
        "known_hosts": "/home/abc/.ssh/known_hosts",
        "auth": "interactive",
        "proxy_jump": ("abc123@gate1.mpcdf.mpg.de",),
    }
    return SSHTarget(**{**settings, **changes})  # type: ignore[arg-type]


def test_generated_config_says_where_and_how_to_check(tmp_path: Path) -> None:
    text = config_text(target(tmp_path))
    assert text.splitlines()[1:] == [
        "Host raven",
        "  HostName raven.mpcdf.mpg.de",
        "  Port 22",
        "  User abc123",
        "  ProxyJump abc123@gate1.mpcdf.mpg.de",
        "  PubkeyAuthentication no",
        "  PreferredAuthentications keyboard-interactive,password",
        "Host *",  # the gateway too: ssh starts the hop with the same -F file
        "  StrictHostKeyChecking yes",
        "  NumberOfPasswordPrompts 1",
        '  UserKnownHostsFile "/home/abc/.ssh/known_hosts"',
        "  ServerAliveInterval 15",
        "  ServerAliveCountMax 4",
        "  ConnectTimeout 10",
    ]
    key = config_text(target(tmp_path, auth="key", proxy_jump=()))
    assert '  IdentityFile "/home/abc/.ssh/id 100%%"' in key  # % starts a token in ssh_config
    assert "ProxyJump" not in key
    assert "  BatchMode yes" in key  # a hop never prompts for a key cluster


def test_a_value_that_would_break_the_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="cannot be written into an ssh config"):
        config_text(target(tmp_path, known_hosts='/x"\nProxyCommand touch /tmp/pwned'))


def test_batch_options_never_prompt_and_never_log_in_anew(tmp_path: Path) -> None:
    interactive = target(tmp_path)
    options = ssh_options(interactive)
    assert options == [
        f"ControlPath={interactive.control_path}",
        "ControlMaster=no",
        "BatchMode=yes",
        "ProxyCommand=false",  # used by ssh only when there is no session to ride
    ]
    key = target(tmp_path, auth="key")
    assert "ProxyCommand=false" not in ssh_options(key)
    connect = ssh_options(interactive, "connect")
    assert {"ControlMaster=auto", "ControlPersist=604800", "BatchMode=no"} <= set(connect)
    argv = ssh_command(interactive)
    assert argv[:2] == ["ssh", "-F"] and Path(argv[2]).read_text() == config_text(interactive)
    assert Path(argv[2]).stat().st_mode & 0o777 == 0o600


def test_an_alias_uses_the_users_own_ssh_config(tmp_path: Path) -> None:
    own = tmp_path / "my ssh config"
    alias = target(tmp_path, host="raven", alias_config=str(own), user=None, proxy_jump=())
    argv = ssh_command(alias)
    assert argv[:3] == ["ssh", "-F", str(own)] and alias.destination == "raven"
    assert f"ControlPath={alias.control_path}" in argv
    assert not list(Path(alias.directory).glob("*.conf"))  # nothing generated


def test_the_session_name_changes_with_where_it_leads(tmp_path: Path) -> None:
    one = target(tmp_path)
    assert one.control_path.name.startswith("raven-")
    assert target(tmp_path, user="other").control_path != one.control_path
    assert target(tmp_path, proxy_jump=()).control_path != one.control_path


def test_private_dir_is_private_and_short(tmp_path: Path) -> None:
    long = tmp_path / ("x" * 80)
    short = private_dir(long)
    assert len(str(short)) < 48 and short == private_dir(long)  # the same stand-in each time
    assert short.stat().st_mode & 0o777 == 0o700
    open_dir = Path("/tmp") / f"labctl-test-{os.getpid()}"
    open_dir.mkdir(mode=0o755, exist_ok=True)
    open_dir.chmod(0o755)
    try:
        with pytest.raises(TransportError, match="mode 755 lets others in"):
            private_dir(open_dir)
    finally:
        open_dir.rmdir()
    link = Path("/tmp") / f"labctl-link-{os.getpid()}"
    link.symlink_to(short)
    try:
        with pytest.raises(TransportError, match="not a directory of yours"):
            private_dir(link)
    finally:
        link.unlink()


def failed(stderr: str, code: int = 255) -> Result:
    return Result(("ssh",), code, "", stderr)


def test_ssh_diagnostics_become_typed_errors(tmp_path: Path) -> None:
    mfa, key = target(tmp_path), target(tmp_path, auth="key")
    refused = failed("ssh: connect to host 127.0.0.1 port 9: Connection refused\r\n")
    assert isinstance(ssh_error(key, refused), ConnectError)
    denied = failed("mfauser@127.0.0.1: Permission denied (keyboard-interactive).\r\n")
    error = ssh_error(mfa, denied, connecting=True)
    assert isinstance(error, AuthError) and "wrong password or one-time password" in str(error)
    rejected = ssh_error(key, failed("hpcuser@127.0.0.1: Permission denied (publickey).\r\n"))
    assert isinstance(rejected, AuthError) and "rejected key" in str(rejected)
    changed = failed(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
        "Host key verification failed.\r\n"
    )
    assert "changed" in str(ssh_error(key, changed))
    guarded = failed(
        "kex_exchange_identification: Connection closed by remote host\r\n"
        "Connection closed by UNKNOWN port 65535\r\n"
    )
    assert isinstance(ssh_error(mfa, guarded), SessionDownError)
    assert ssh_error(key, failed("my-tool: exit 255 on purpose\n")) is None  # the command's own
    assert ssh_error(key, failed("anything", code=1)) is None


def test_cluster_settings_are_checked() -> None:
    base = {"scratch": "/ptmp/abc", "host": "raven.mpcdf.mpg.de", "user": "abc"}
    for bad, message in (
        ({"proxy_jump": ["abc@gate1 -oProxyCommand=x"]}, "must be \\[user@\\]host"),
        ({"ssh_alias": "raven"}, "takes host, user and proxy_jump"),
        ({"host": "raven;touch x"}, "host"),
        ({"auth": "password"}, "auth"),
    ):
        with pytest.raises(ValueError, match=message):
            ClusterConfig.model_validate({**base, **bad})
    with pytest.raises(ValueError, match="cluster name 'raven cluster'"):
        Config.model_validate({"clusters": {"raven cluster": base}})
    alias = ClusterConfig.model_validate({"scratch": "/ptmp/abc", "ssh_alias": "raven"})
    assert alias.ssh_alias == "raven"


@needs_testbed
def test_a_session_past_its_lifetime_is_closed(tmp_path: Path) -> None:
    key = key_target(tmp_path / "s", lifetime_seconds=2)
    sessions = Sessions()
    try:
        SSHRunner(key, sessions).run(["true"])
        first = sessions.status(key)
        assert first.up and first.until is not None and first.since is not None
        assert (first.until - first.since).total_seconds() == 2
        # In use, the master never idles into ControlPersist's end: labctl ends it.
        busy = subprocess.Popen([*ssh_command(key), "--", key.destination, "sleep 6"])
        time.sleep(2.5)
        expired = sessions.status(key)
        assert not expired.up and expired.detail.startswith("expired at")
        assert busy.wait(timeout=5) == 255  # the master went, and the command with it
        assert not sessions.status(key).up
    finally:
        sessions.close(key)

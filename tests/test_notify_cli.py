"""The notification settings: the lab config's `notify:` section, its password, and each
member's choice through `labctl notify`, with a real SMTP server and webhook receiver."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from labctl.cli import cli
from labctl.config import Config, load_config
from labctl.config.notifyconfig import address_kind, parse_webhook
from labctl.db import Database
from labctl.errors import ConfigError
from labctl.users import add_user, get_user, recipient
from tests.notifyfixtures import (
    free_port,
    http_receiver,
    loopback_webhooks,
    self_signed,
    smtp_server,
)

SMTP = {"host": "127.0.0.1", "port": 2525, "security": "none", "from_address": "labctl@lab.org"}


def write(tmp_path: Path, settings: dict[str, Any], mode: int = 0o600) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ({"smtp": {**SMTP, "security": "ssl"}}, "notify.smtp.security: Input should be"),
        ({"smtp": {**SMTP, "user": "lab"}}, "a login goes over TLS only"),
        ({"smtp": {**SMTP, "from_address": "labctl"}}, "'labctl' is not an e-mail address"),
        ({"smtp": {**SMTP, "port": 0}}, "notify.smtp.port: Input should be greater"),
        ({"webhook": "ftp://chat.lab/hooks/x"}, "must be an http:// or https:// URL"),
        ({"webhook": "https:///hooks/x"}, "must be an http:// or https:// URL"),
        ({"smtp": {**SMTP, "passwd": "x"}}, "unknown key 'notify.smtp.passwd'"),
    ],
)
def test_bad_settings_are_refused_in_one_line(
    tmp_path: Path, notify: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"notify": notify}))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_smtp_password_is_kept_as_the_database_s(tmp_path: Path) -> None:
    smtp = {**SMTP, "security": "starttls", "user": "lab", "password": "pw-in-file"}
    shared = write(tmp_path, {"notify": {"smtp": smtp}}, 0o644)
    with pytest.raises(ConfigError, match=r"readable by others.*chmod 600.*LABCTL_SMTP_PASSWORD"):
        load_config(shared, env={})
    shared.chmod(0o600)
    assert load_config(shared, env={}).notify.smtp.password == "pw-in-file"  # type: ignore[union-attr]
    without = {k: v for k, v in smtp.items() if k != "password"}
    public = write(tmp_path, {"notify": {"smtp": without}}, 0o644)
    config = load_config(public, env={"LABCTL_SMTP_PASSWORD": "pw-from-env"})
    assert config.notify.smtp.password == "pw-from-env"  # type: ignore[union-attr]


@pytest.fixture
def run(config: Config, db: Database, tmp_path: Path):  # type: ignore[no-untyped-def]
    add_user(db, "tester", email="tester@lab.org")
    add_user(db, "dana", email="dana@lab.org")
    add_user(db, "boss", role="admin")

    def invoke(*args: str, notify: dict[str, Any] | None = None, user: str = "tester") -> Result:
        settings = json.loads(config.model_dump_json())
        settings.update(user=user, notify=notify or {})
        return CliRunner().invoke(cli, ["--config", str(write(tmp_path, settings)), *args])

    return invoke


def test_members_choose_for_themselves_and_admins_for_others(run, db: Database) -> None:  # type: ignore[no-untyped-def]
    done = run("notify", "set", "--mode", "digest")
    assert done.exit_code == 0 and done.output == "notifications of tester: digest\n"
    assert get_user(db, "tester").notify_mode == "digest"
    refused = run("notify", "set", "--user", "dana", "--mode", "failures")
    assert refused.exit_code == 3
    assert refused.output == "error: only dana or an admin may change how dana is notified\n"
    assert recipient(db, "dana").mode == "each"
    assert run("notify", "set", "--user", "dana", "--mode", "failures", user="boss").exit_code == 0
    assert recipient(db, "dana").mode == "failures"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook", "javascript:alert(1)"], "must be an http:// or https:// URL"),
        (["--webhook", "http://chat.lab/a b"], "a webhook URL has no spaces"),
        (["--mode", "hourly"], "Invalid value for '--mode'"),
        ([], "say what to change"),
        (["--webhook", "http://x.lab/h", "--no-webhook"], "exclude each other"),
    ],
)
def test_bad_choices_are_refused_in_one_line(run, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    result = run("notify", "set", *args)
    assert result.exit_code == 2 and message in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_show_never_shows_a_webhook_s_secret_path(run) -> None:  # type: ignore[no-untyped-def]
    hook = "https://chat.lab.org/hooks/s3cret-token"
    assert run("notify", "set", "--webhook", hook).exit_code == 0
    shown = run("notify", "show", "--json", notify={"smtp": SMTP, "webhook": hook})
    assert shown.exit_code == 0 and "s3cret" not in shown.output
    assert json.loads(shown.output) == {
        "user": "tester",
        "mode": "each",
        "email": "tester@lab.org",
        "webhook": "https://chat.lab.org/...",
        "smtp": "127.0.0.1:2525 (none)",
        "lab_webhook": "https://chat.lab.org/...",
    }
    assert run("notify", "set", "--no-webhook").exit_code == 0
    assert "webhook: -\n" in run("notify", "show").output


def test_a_test_message_goes_through_every_channel(run) -> None:  # type: ignore[no-untyped-def]
    with smtp_server() as (box, port), http_receiver() as hook:
        assert run("notify", "set", "--webhook", hook.url).exit_code == 0
        result = run("notify", "test", notify={"smtp": {**SMTP, "port": port}})
    assert result.exit_code == 0, result.output
    assert result.output == "email: sent\nwebhook: sent\n"
    assert [to for to, _ in box.mails] == [["tester@lab.org"]]
    assert box.subjects() == ["[labctl] test message"]
    assert "notifications reach you here" in hook.posts[0][0]["text"]


def test_a_test_message_says_which_channel_failed(run) -> None:  # type: ignore[no-untyped-def]
    result = run("notify", "test", notify={"smtp": {**SMTP, "port": free_port()}})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("email: SMTP 127.0.0.1:") and "Connection" in lines[0]
    assert lines[1] == "error: the test message did not go through: email"
    nowhere = run("notify", "test")
    assert nowhere.exit_code == 1 and "nowhere to send to" in nowhere.output
    other = run("notify", "test", "--user", "dana", notify={"smtp": SMTP})
    assert other.exit_code == 3


def test_the_example_config_s_notify_section_is_valid(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parent.parent / "config.example.yaml").read_text()
    block = text[text.index("# notify:") :].splitlines()
    lines = [line[2:] for line in block if not line.lstrip("# ").startswith(("#", "password"))]
    config = load_config(write(tmp_path, yaml.safe_load("\n".join(lines))), env={})
    assert config.notify.smtp is not None and config.notify.smtp.security == "starttls"
    assert config.notify.webhook == "https://chat.lab.org/hooks/xxxxxxxx"


def test_setup_keeps_the_smtp_password_in_the_private_config_only(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp = {**SMTP, "security": "starttls", "user": "labctl"}
    lab = tmp_path / "lab.yaml"
    lab.write_text(yaml.safe_dump({"notify": {"smtp": smtp}}))
    lab.chmod(0o644)
    args = ["setup", "--non-interactive", "--no-cron", "--no-verify", "--no-mount"]
    args += ["--lab-config", str(lab), "--user", "charlie", "--email", "charlie@lab.org"]
    refused = CliRunner().invoke(cli, [*args, "--store-smtp-password"])
    assert refused.exit_code == 2
    assert refused.output == (
        "error: --store-smtp-password takes the password from LABCTL_SMTP_PASSWORD\n"
    )
    monkeypatch.setenv("LABCTL_SMTP_PASSWORD", "s3cret-smtp")
    done = CliRunner().invoke(cli, [*args, "--store-smtp-password"])
    assert done.exit_code == 0, done.output
    path = isolated_home / ".config" / "labctl" / "config.yaml"
    assert path.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(path.read_text())["notify"]["smtp"]["password"] == "s3cret-smtp"
    assert "s3cret" not in lab.read_text()
    monkeypatch.delenv("LABCTL_SMTP_PASSWORD")
    assert load_config(path, env={}).notify.smtp.password == "s3cret-smtp"  # type: ignore[union-attr]
    lab.write_text("{}")
    monkeypatch.setenv("LABCTL_SMTP_PASSWORD", "s3cret-smtp")
    path.unlink()
    bare = CliRunner().invoke(cli, [*args, "--store-smtp-password"])
    assert bare.exit_code == 2 and "needs the lab's notify.smtp settings" in bare.output


def test_an_unknown_member_is_told_how_to_be_added(run) -> None:  # type: ignore[no-untyped-def]
    for args in (["notify", "show"], ["notify", "set", "--mode", "digest"]):
        done = run(*args, user="root")  # the default store knows no member yet
        assert done.exit_code == 1
        assert done.output == (
            "error: no user 'root' in the lab's store: an admin adds the member with 'labctl user "
            "add root --email ADDRESS', or set 'user:' in your config to your lab username\n"
        )


INTERNAL = [
    "http://127.0.0.1:8080/api/v1/jobs/bulk",
    "http://127.1/x",
    "http://0x7f.1/x",
    "http://2130706433/x",
    "http://017700000001/x",
    "http://[::1]:8080/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://[::ffff:a00:1]/x",
    "http://[64:ff9b::a9fe:a9fe]/x",
    "http://[2002:7f00:1::]/x",
    "http://0.0.0.0/x",
    "http://[::]/x",
    "http://10.1.2.3/x",
    "http://172.16.0.1/x",
    "http://192.168.1.1/x",
    "http://100.64.0.1/x",
    "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/x",
    "http://[fc00::1]/x",
    "http://224.0.0.1/x",
    "http://[ff02::1]/x",
    "http://240.0.0.1/x",
    "https://localhost/x",  # looked up: 127.0.0.1 (or ::1)
]


@pytest.mark.parametrize("url", INTERNAL)
def test_a_webhook_to_an_internal_address_is_refused_when_set(run, db: Database, url: str) -> None:  # type: ignore[no-untyped-def]
    result = run("notify", "set", "--webhook", url)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1
    assert "a webhook reaches public addresses only" in result.output
    assert recipient(db, "tester").webhook is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://chat.lab.org:0/hooks/x", "port 0 is not a port"),
        ("http://chat.lab.org:99999/hooks/x", "with a valid host and port"),
        ("http://[::1/hooks/x", "with a valid host and port"),
        ("http://chat\x01.lab.org/hooks/x", "no spaces or control characters"),
        ("http://chat.lab.org/hooks/\x7f", "no spaces or control characters"),
        ("http://chat.lab.org/hooks/\u200bx", "no spaces or control characters"),
        ("https://exämple..com/hooks/x", "'exämple..com' is not a valid host name"),
        ("https://-chat.lab.org/hooks/x", "is not a valid host name"),
        ("https://me:pw@chat.lab.org/hooks/x", "no user:password@"),
    ],
)
def test_a_malformed_webhook_is_refused_in_one_line(run, url: str, message: str) -> None:  # type: ignore[no-untyped-def]
    result = run("notify", "set", "--webhook", url)
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.count("\n") == 1
    assert "\x01" not in result.output and "\x7f" not in result.output


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_a_public_address_is_one_a_webhook_may_reach(address: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) is None
    assert parse_webhook(f"https://[{address}]/x" if ":" in address else f"https://{address}/x")


def test_a_public_name_is_kept_as_idna(run, db: Database) -> None:  # type: ignore[no-untyped-def]
    assert parse_webhook("https://Bücher.example/h?k=1").host == "xn--bcher-kva.example"
    assert parse_webhook("https://Bücher.example/h?k=1").target == "/h?k=1"
    assert parse_webhook("https://chat.lab.org/h").port == 443


def stored_webhook(db: Database, username: str, url: str) -> None:
    """A webhook as an older labctl, or a hand edit, left it in the store: unchecked."""
    db.users.update({"username": username}, {"$set": {"notify_webhook": url}})


@contextmanager
def listener(tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[bytes]]]:
    """A loopback port (over TLS with `tls`) that records what anyone sends to it; webhooks are
    not allowed to reach it unless a test says so."""
    heard: list[bytes] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), conn:
                talk = tls.wrap_socket(conn, server_side=True) if tls else conn
                heard.append(talk.recv(65536))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1]), heard
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(5)


@pytest.mark.parametrize("user", ["tester", "boss"])
def test_a_stored_internal_webhook_is_refused_at_send_time_too(run, db, user: str) -> None:  # type: ignore[no-untyped-def]
    with listener() as (port, heard):
        for url in (f"http://127.0.0.1:{port}/hooks/x", f"http://localhost:{port}/hooks/x"):
            stored_webhook(db, "tester", url)
            result = run("notify", "test", "--user", "tester", user=user)
            assert result.exit_code == 1, result.output
            first = result.output.splitlines()[0]
            assert first.startswith(f"webhook: webhook http://{url.split('/')[2]}/...: ")
            assert first.endswith("(loopback): a webhook reaches public addresses only")
    assert heard == []  # nothing was posted: not from the member's machine, nor the admin's


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://chat\x01.lab.org/hooks/x", "no spaces or control characters"),
        ("http://chat.lab.org\x7f/hooks/x", "no spaces or control characters"),
        ("https://exämple..com/hooks/x", "is not a valid host name"),
        ("https://chat.lab.org:0/hooks/x", "port 0 is not a port"),
        ("http://[::1/hooks/x", "with a valid host and port"),
    ],
)
def test_a_stored_malformed_webhook_fails_its_test_in_one_line(run, db, url: str, why: str) -> None:  # type: ignore[no-untyped-def]
    stored_webhook(db, "tester", url)
    result = run("notify", "test")
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0].startswith("webhook: webhook ")
    assert why in result.output and "\x01" not in result.output and "\x7f" not in result.output
    assert result.output.splitlines()[1] == "error: the test message did not go through: webhook"


def test_a_redirect_is_not_followed(run) -> None:  # type: ignore[no-untyped-def]
    with http_receiver() as inside, redirecting(inside.url) as hook:
        assert run("notify", "set", "--webhook", hook).exit_code == 0
        result = run("notify", "test")
    assert result.exit_code == 1
    port = hook.split("/")[2]
    assert result.output.splitlines()[0] == (
        f"webhook: webhook http://{port}/...: HTTP 302, a redirect: not followed"
    )
    assert inside.posts == []


@contextmanager
def redirecting(to: str) -> Iterator[str]:
    """A webhook on loopback that answers every POST with a 302 to `to`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)
            self.send_header("Location", to)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/s3cret"
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_connection_is_told_without_the_network_s_own_words(run) -> None:  # type: ignore[no-untyped-def]
    closed = free_port()
    with loopback_webhooks():
        assert run("notify", "set", "--webhook", f"http://127.0.0.1:{closed}/h").exit_code == 0
        result = run("notify", "test")
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        f"webhook: webhook http://127.0.0.1:{closed}/...: could not connect"
    )


def test_an_https_webhook_checks_the_certificate(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert, key = self_signed(tmp_path)  # for 127.0.0.1, signed by no CA this machine trusts
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with loopback_webhooks(), listener(tls) as (port, heard):
        url = f"https://127.0.0.1:{port}/hooks/s3cret"
        assert run("notify", "set", "--webhook", url).exit_code == 0
        result = run("notify", "test")
    assert result.output.splitlines()[0] == (
        f"webhook: webhook https://127.0.0.1:{port}/...: TLS failed (certificate or handshake)"
    )
    assert heard == []  # nothing was sent over the connection

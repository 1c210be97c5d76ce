"""The notification settings: the lab config's `notify:` section, its password, and each
member's choice through `labctl notify`, with a real SMTP server and webhook receiver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from labctl.cli import cli
from labctl.config import Config, load_config
from labctl.db import Database
from labctl.errors import ConfigError
from labctl.users import add_user, get_user, recipient
from tests.notifyfixtures import free_port, http_receiver, smtp_server

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

"""Members through the labctl service: the real web app served by uvicorn over an embedded store,
and the real CLI and Python API against it with members' and an admin's tokens (issue 11).

Authority comes from the token: a member's config may claim to be anyone, and no database
credential is on their machine.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from click.testing import CliRunner, Result

from labctl.access.lab import Lab, LocalLab, Query
from labctl.access.service import ServiceLab
from labctl.api import dbjob, dblog, dbquery, dbqueue_job
from labctl.catalog.experiments import get_entry
from labctl.cli import cli
from labctl.config import Config, DatabaseConfig
from labctl.db import connect
from labctl.errors import PermissionDenied, ValidationError
from labctl.jobs.queue import get_job
from labctl.jobs.submit import JobRequest
from labctl.model.job import Job
from labctl.private import write_private
from labctl.settings import ServiceConfig
from labctl.stages.heartbeat import beat
from labctl.users import authenticate, create_token, get_user, set_notify, token_user
from tests.jobfixtures import DATASET, job_in_state
from tests.mongoserver import free_port
from tests.notifyfixtures import http_receiver
from tests.testbed import write_config
from tests.usagefixtures import seed_usage
from tests.webfixtures import password, seed, served, web_config

NEW_PASSWORD = "a long new passphrase 7"
JOB = JobRequest(
    dataset=DATASET,
    compute_cluster="local",
    job_type="file_stats",
    datarawfiles=("fl_a.roli",),
    datafiles=("phase.h5",),
    job_options={"sleep_seconds": "0.5"},
)


class LabServer:
    """A lab server: its config, its database, and its service's address once served."""

    def __init__(self, root: Path) -> None:
        store = DatabaseConfig(uri="embedded", path=root / "store")
        self.config = web_config(Config(user="labserver", database=store), root)
        self.db = connect(store)
        seed(self.db, self.config, root)
        self.url = ""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LabServer]:
    lab = LabServer(tmp_path / "server")
    with served(lab.config) as url:
        lab.url = url
        yield lab
    lab.db.close()


@pytest.fixture
def tokens(server: LabServer) -> dict[str, str]:
    return {u: create_token(server.db, u) for u in ("alice", "bob", "root")}


MemberConfig = Callable[..., Path]


@pytest.fixture
def member(tmp_path: Path, server: LabServer, tokens: dict[str, str]) -> MemberConfig:
    """The config file of a member's machine: the service's address and their token only."""

    def config_of(username: str, token: str | None = None, **settings: Any) -> Path:
        home = tmp_path / f"machine-{username}"
        home.mkdir(exist_ok=True)
        token_file = home / "token"
        write_private(token_file, (token or tokens[username]) + "\n")
        path = home / "config.yaml"
        service = {"url": server.url, "token_file": str(token_file)}
        path.write_text(yaml.safe_dump({"service": service, **settings}))
        return path

    return config_of


def run(config: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], input=input)


def one_line(done: Result, code: int) -> str:
    """The one error line of a command that exited with `code`."""
    assert done.exit_code == code, (done.exit_code, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


# --- who may do what through the service ---------------------------------------------------------


def test_a_member_cannot_do_an_admin_s_work(server: LabServer, member: MemberConfig) -> None:
    bob = member("bob", user="root")  # claiming another name in the config changes nothing
    alices_hash = server.db.users.find_one({"username": "alice"})["password_hash"]
    refused = {
        ("user", "set-role", "bob", "admin"): "only an admin may change roles",
        ("user", "passwd", "alice"): "only alice or an admin may set their password",
        ("user", "token", "alice"): "only alice or an admin may make their token",
        ("user", "add", "eve", "--no-password"): "only an admin may add lab members",
    }
    for args, why in refused.items():
        typed = f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n"
        assert why in one_line(run(bob, *args, input=typed), 3)
    assert get_user(server.db, "bob").role == "member"
    assert server.db.users.find_one({"username": "alice"})["password_hash"] == alices_hash
    assert server.db.users.find_one({"username": "eve"}) is None
    assert run(bob, "whoami").stdout.startswith("bob (member) via the labctl service at http")


def test_an_admin_can(server: LabServer, member: MemberConfig) -> None:
    root = member("root")
    assert run(root, "user", "set-role", "bob", "admin").exit_code == 0
    assert get_user(server.db, "bob").role == "admin"
    typed = f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n"
    assert run(root, "user", "passwd", "alice", input=typed).exit_code == 0
    assert authenticate(server.db, "alice", NEW_PASSWORD) is not None
    made = run(root, "user", "token", "alice")
    assert made.exit_code == 0 and made.stdout.startswith("lct_")
    assert token_user(server.db, made.stdout.strip()).username == "alice"  # type: ignore[union-attr]
    added = run(root, "user", "add", "eve", "--no-password", "--hpc", "raven=ev1")
    assert added.exit_code == 0, added.stderr
    assert get_user(server.db, "eve").hpc_accounts == {"raven": "ev1"}
    listing = run(member("bob"), "user", "list", "--json")
    assert listing.exit_code == 0, listing.stderr
    listed = json.loads(listing.stdout)
    assert [u["username"] for u in listed] == ["alice", "bob", "eve", "root"]


def test_a_member_sets_their_own_password_and_token(
    server: LabServer, member: MemberConfig
) -> None:
    alice = member("alice")
    typed = f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n"
    wrong = run(alice, "user", "passwd", "alice", input="a guess\n" + typed)
    assert "your current password is wrong" in one_line(wrong, 3)
    assert authenticate(server.db, "alice", NEW_PASSWORD) is None
    current = f"{password('alice')}\n"
    assert run(alice, "user", "passwd", "alice", input=current + typed).exit_code == 0
    assert authenticate(server.db, "alice", NEW_PASSWORD) is not None
    made = run(alice, "user", "token", "alice", "--days", "30")
    assert made.exit_code == 0
    expires = server.db.users.find_one({"username": "alice"})["api_token_expires"]
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    # the new token replaced the one in alice's token file
    assert "refused the token" in one_line(run(alice, "whoami"), 3)


def test_a_member_cannot_cancel_or_retry_another_s_job(
    server: LabServer, member: MemberConfig
) -> None:
    alice, bob = member("alice"), member("bob", user="alice")
    queued = run(alice, "submit", DATASET, "--cluster", "local", "--job-type", "file_stats",
                 "--rawfile", "fl_a.roli", "--json")  # fmt: skip
    assert queued.exit_code == 0, queued.stderr
    job_id = json.loads(queued.stdout)["job_id"]
    assert get_job(server.db, job_id)["user"] == "alice"
    assert "belongs to alice" in one_line(run(bob, "cancel", job_id), 3)
    assert get_job(server.db, job_id)["status"] == "queued"
    assert run(member("root"), "cancel", job_id).exit_code == 0
    assert get_job(server.db, job_id)["status"] == "cancelled"
    assert "belongs to alice" in one_line(run(bob, "retry", job_id), 3)
    assert run(alice, "retry", job_id).stdout.strip() == f"requeued {job_id}"
    assert get_job(server.db, job_id)["status"] == "queued"
    # A filter through the service: listed first, acted on with --yes, a member's own jobs only.
    assert "alice" in one_line(run(bob, "cancel", "--user", "alice", "--yes"), 3)
    listed = run(alice, "cancel", "--status", "queued")
    assert listed.exit_code == 1 and job_id in listed.stdout, listed.stdout
    assert "add --yes" in listed.stderr and get_job(server.db, job_id)["status"] == "queued"
    done = run(alice, "cancel", "--status", "queued", "--yes")
    assert done.exit_code == 0 and "cancelled 1 job(s)" in done.stdout, done.stdout
    assert get_job(server.db, job_id)["status"] == "cancelled"


def test_a_member_cannot_move_another_s_experiment(
    server: LabServer, member: MemberConfig, tmp_path: Path
) -> None:
    mine = "20230101_090000"
    raw = tmp_path / "alice-raw"
    raw.mkdir()
    alice, bob = member("alice"), member("bob", user="alice")
    logged = run(alice, "log", mine, "--set", "user=alice", "--raw-path", str(raw))
    assert logged.exit_code == 0, logged.stderr
    for field in ("data_raw_path=/home/alice/.config/labctl", "user=bob"):
        refused = run(bob, "log", mine, "--update", "--set", field)
        assert "is alice's: only they or an admin may set" in one_line(refused, 3)
    assert get_entry(server.db, mine)["data_raw_path"] == str(raw)
    assert run(bob, "log", mine, "--update", "--set", "runclass.id=ARB").exit_code == 0
    moved = run(member("root"), "log", mine, "--update", "--set", f"data_raw_path={tmp_path}")
    assert moved.exit_code == 0, moved.stderr
    entry = get_entry(server.db, mine)
    assert (entry["data_raw_path"], entry["runclass"]["id"]) == (str(tmp_path), "ARB")
    assert entry["updated_by"] == "root"


def test_a_batch_is_stored_whole_or_not_at_all(server: LabServer, member: MemberConfig) -> None:
    entries = [
        {"dataset": f"2023010{d}_090000", "user": "bob", "data_raw_path": "/d"} for d in (1, 2)
    ]
    entries.append({"dataset": "20230103_090000", "user": "bob", "n_planes": 2**70})
    batch = member("bob").parent / "batch.yaml"
    batch.write_text(yaml.safe_dump(entries))
    one_line(run(member("bob"), "log", "--from-file", str(batch)), 2)
    assert server.db.data.find_one({"dataset": "20230101_090000"}) is None


# --- the same results as the local path ----------------------------------------------------------


def scenario(lab: Lab, raw: Path) -> dict[str, Any]:
    """Log, query, show, plan, submit and list, as alice; what each gave back."""
    logged = lab.log(
        [
            ("20230101_090000", {"user": "alice", "data_raw_path": str(raw), "n_planes": "12"}),
            ("20230102_090000", {"user": "alice", "data_raw_path": str(raw), "runclass.id": "X"}),
        ]
    )
    picked = Query(["n_planes", "runclass.id"], where=["user=alice"], since="2023-01-01",
                   filter={"n_planes": {"$gt": 3}}, sort=["-dataset"], limit=5)  # fmt: skip
    script = lab.batch_script(JOB)
    job = lab.submit(JOB)
    listed, one = lab.jobs({"user": "alice"}).items, lab.job(job.job_id)
    assert all(isinstance(j, Job) for j in [job, *listed, one])  # typed on either path
    return {
        "logged": logged,
        "picked": lab.query(picked),
        "all": lab.query(Query(sort=["-acquired_at"])),
        "shown": lab.show("20230102_090000"),
        "script": script,
        "job": job.doc(),
        "listed": [j.doc() for j in listed],
        "one": one.doc(),
    }


JOB_ID = re.compile(r"\bj[0-9a-f]{11}\b")
VOLATILE = {"created_at", "updated_at", "next_try_at", "job_id", "history"}


def same_form(value: Any, root: str) -> Any:
    """`value` without what differs between two runs: times of writing, ids, the store's root."""
    if isinstance(value, dict):
        return {k: same_form(v, root) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [same_form(v, root) for v in value]
    if isinstance(value, str):
        return JOB_ID.sub("ID", value.replace(root, "ROOT"))
    return value


@pytest.mark.parametrize("through", ["database", "service"])
def test_the_seam_gives_the_same_either_way(
    through: str, server: LabServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    here = LabServer(tmp_path / "here")
    local = LocalLab(here.config.model_copy(update={"user": "alice"}), here.db)
    service = ServiceLab(ServiceConfig(url=server.url), tokens["alice"])
    raw = tmp_path / "raw"
    raw.mkdir()
    got = {
        "database": same_form(scenario(local, raw), str(tmp_path / "here")),
        "service": same_form(scenario(service, raw), str(tmp_path / "server")),
    }
    mine, other = got[through], got["service" if through == "database" else "database"]
    assert mine == other
    assert [d["dataset"] for d in mine["picked"]] == ["20230101_090000"]
    assert mine["picked"][0]["n_planes"] == 12
    assert isinstance(mine["shown"]["acquired_at"], dt.datetime)
    assert mine["one"]["user"] == "alice" and mine["one"]["status"] == "queued"
    assert len(mine["listed"]) == 1 and "#SBATCH --job-name=labctl-ID\n" in mine["script"]
    assert "cd '<scratch>/ID'" in mine["script"] and "ROOT" not in mine["script"]  # no paths
    here.db.close()


def test_the_cli_prints_the_same_either_way(
    server: LabServer, member: MemberConfig, tmp_path: Path
) -> None:
    here = LabServer(tmp_path / "here")
    local = write_config(here.config.model_copy(update={"user": "alice"}), tmp_path / "local.yaml")
    remote = member("alice")
    roots = {local: str(tmp_path / "here"), remote: str(tmp_path / "server")}
    commands = [
        ("log", "20230101_090000", "--set", "user=alice", "--raw-path", "/d", "--json"),
        ("query", "user", "data_raw_path", "--where", "user=alice", "--json"),
        ("query", "acquired_at", "data_raw_path", "--csv", "--sort", "-dataset"),
        ("query", "user", "acquired_at", "--since", "2022-01-01"),
        ("submit", DATASET, "--cluster", "local", "--job-type", "file_stats", "--json"),
        ("submit", DATASET, "--cluster", "local", "--job-type", "file_stats", "--dry-run"),
        ("queue", "--json"),
        (
            "queue",
            "--status",
            "queued,failed",
            "--user",
            "me",
            "--job-type",
            "file_stats",
            "--json",
        ),
        ("queue", "--status", "failed", "--json"),
        ("show", DATASET, "--json"),
    ]
    for args in commands:
        out = {}
        for config, root in roots.items():
            done = run(config, *args)
            assert done.exit_code == 0, (args, done.stderr)
            text = done.stdout
            out[config] = same_form(json.loads(text) if "--json" in args else text, root)
        assert out[local] == out[remote], args
    here.db.close()


def test_the_python_api_through_the_service(server: LabServer, member: MemberConfig) -> None:
    alice = member("alice")
    stored = dblog("20230101_090000", {"user": "alice", "data_raw_path": "/d"}, n_planes="4",
                   config=alice)  # fmt: skip
    assert stored["created_by"] == "alice" and stored["n_planes"] == 4
    table = dbquery(["n_planes"], {"user": "alice"}, where=["n_planes>=4"], config=alice)
    assert table.to_dict("records") == [{"dataset": "20230101_090000", "n_planes": 4}]
    with pytest.raises(ValidationError, match="field n_plane; did you mean n_planes"):
        dbquery(["n_plane"], where=["n_plane>=4"], config=alice)
    everything = dbquery(config=alice)
    assert len(everything) == 2 and everything["acquired_at"].dt.year.tolist() == [2021, 2023]
    job_id = dbqueue_job(DATASET, "local", "file_stats", user="root", config=alice)
    assert dbjob(job_id, config=alice)["user"] == "alice"  # the token's member, whatever is asked
    bob = member("bob")
    with pytest.raises(PermissionDenied, match="only they or an admin"):
        dblog("20230101_090000", {"data_raw_path": "/elsewhere"}, update=True, config=bob)


def test_a_dataset_s_timeline_through_the_service(server: LabServer, member: MemberConfig) -> None:
    alice = member("alice")
    job_id = dbqueue_job(DATASET, "local", "file_stats", config=alice)
    done = run(alice, "timeline", DATASET, "--json")
    assert done.exit_code == 0, done.stderr
    shown = json.loads(done.stdout)
    assert [(job["job_id"], job["status"]) for job in shown["jobs"]] == [(job_id, "queued")]
    assert shown["bytes_out"] == 0 and set(shown["phases_seconds"]) >= {"queued", "computing"}


# --- what goes wrong gives one line --------------------------------------------------------------


def test_unreachable_bad_expired_and_revoked_tokens(
    server: LabServer, member: MemberConfig, tokens: dict[str, str], tmp_path: Path
) -> None:
    nowhere = member("alice")
    moved = yaml.safe_load(nowhere.read_text())
    moved["service"]["url"] = f"http://127.0.0.1:{free_port()}"
    nowhere.write_text(yaml.safe_dump(moved))
    assert "cannot reach the labctl service" in one_line(run(nowhere, "query"), 1)

    forged = member("bob", token="lct_" + "x" * 43)
    assert "refused the token" in one_line(run(forged, "query"), 3)

    alice = member("alice")
    server.db.users.update(
        {"username": "alice"}, {"$set": {"api_token_expires": dt.datetime.now(dt.UTC)}}
    )
    assert "refused the token" in one_line(run(alice, "queue"), 3)

    old = tokens["bob"]
    create_token(server.db, "bob")  # replaces, so revokes, bob's token
    line = one_line(run(member("bob", token=old), "submit", DATASET, "--cluster", "local",
                        "--job-type", "file_stats"), 3)  # fmt: skip
    assert "run 'labctl login" in line and old not in line


def test_a_token_file_others_may_read_is_refused(member: MemberConfig) -> None:
    config = member("alice")
    (config.parent / "token").chmod(0o644)
    assert "chmod 600" in one_line(run(config, "query"), 2)
    (config.parent / "token").unlink()
    assert "run 'labctl login http" in one_line(run(config, "query"), 2)


def test_a_member_machine_has_no_database(member: MemberConfig) -> None:
    for args in (["db", "init"], ["provenance", DATASET]):  # the watchdog: test_service_watchdog
        assert "run it where the database is" in one_line(run(member("alice"), *args), 2)


def test_plain_http_only_to_this_machine(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"service": {"url": "http://lab.example.org"}}))
    assert "use https" in one_line(run(config, "query"), 2)


def test_labctl_login_with_a_password_or_a_pasted_token(
    server: LabServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"service": {"url": server.url,
                                                  "token_file": str(tmp_path / "t")}}))  # fmt: skip
    done = run(config, "login", server.url, "--username", "bob", input=password("bob") + "\n")
    assert done.exit_code == 0, done.stderr
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o600
    assert run(config, "whoami").stdout.startswith("bob (member)")
    token = (tmp_path / "t").read_text().strip()
    assert token not in done.stdout + done.stderr
    wrong = run(config, "login", server.url, "--username", "bob", input="nope\n")
    assert "wrong username or password" in one_line(wrong, 3)
    garbled = run(config, "login", server.url, "--token", input="lct_a b\r\nX-Evil: 1\n")
    assert "not a labctl API token" in one_line(garbled, 2)
    pasted = run(config, "login", server.url, "--token", input=tokens["alice"] + "\n")
    assert pasted.exit_code == 0, pasted.stderr
    assert run(config, "whoami").stdout.startswith("alice (member)")


def test_login_on_a_new_machine_writes_its_config(server: LabServer, isolated_home: Path) -> None:
    done = CliRunner().invoke(cli, ["login", server.url, "--username", "alice"],
                              input=password("alice") + "\n")  # fmt: skip
    assert done.exit_code == 0, done.stderr
    config = isolated_home / ".config" / "labctl" / "config.yaml"
    assert yaml.safe_load(config.read_text()) == {"service": {"url": server.url}}
    assert config.stat().st_mode & 0o777 == 0o600
    assert (config.parent / "token").stat().st_mode & 0o777 == 0o600
    me = CliRunner().invoke(cli, ["whoami"])
    assert me.stdout.strip() == f"alice (member) via the labctl service at {server.url}"


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with a redirect to `target`, and notes the headers it was sent."""

    target: ClassVar[str] = ""
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        Recorder.seen.append(self.headers.get("Authorization"))
        self.send_response(307)
        self.send_header("Location", Recorder.target + self.path)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_token_does_not_follow_a_redirect(tmp_path: Path) -> None:
    """A server that redirects gets one request; the one it points at, none: the token stays."""
    with (
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder) as elsewhere,
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder) as first,
    ):
        Recorder.seen = []
        Recorder.target = f"http://127.0.0.1:{elsewhere.server_address[1]}"
        for server in (elsewhere, first):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{first.server_address[1]}"
        token = "lct_" + "t" * 43
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"service": {"url": url}}))
        done = CliRunner().invoke(cli, ["--config", str(config), "whoami"],
                                  env={"LABCTL_TOKEN": token})  # fmt: skip
        for server in (elsewhere, first):
            server.shutdown()
    assert f"redirects to {Recorder.target}/api/v1/me" in one_line(done, 1)
    assert Recorder.seen == [f"Bearer {token}"]  # the first server only
    assert token not in done.stderr


def test_what_json_cannot_carry_is_refused_before_sending(
    server: LabServer, member: MemberConfig
) -> None:
    since = {"acquired_at": {"$gte": dt.datetime(2022, 1, 1, tzinfo=dt.UTC)}}
    with pytest.raises(ValidationError, match="compare dates with since/until"):
        dbquery(filter=since, config=member("alice"))
    assert len(dbquery(since="2022-01-01", config=member("alice"))) == 0


def test_refusals_are_the_local_path_s(
    server: LabServer, member: MemberConfig, tmp_path: Path
) -> None:
    """The same line and exit code through the service as on the database itself."""
    remote = member("alice")
    local = write_config(server.config.model_copy(update={"user": "alice"}), tmp_path / "l.yaml")
    job = ("submit", DATASET, "--cluster", "local", "--job-type", "file_stats")
    assert run(remote, *job).exit_code == 0
    for args, code in [
        (("show", "20990101_000000"), 1),
        (("query", "--where", "n_planes>many"), 2),
        (("log", "2023_bad"), 2),
        (job, 1),
        (("retry", "j000000000ff"), 1),
    ]:
        assert one_line(run(remote, *args), code) == one_line(run(local, *args), code), args


def test_whoami_on_the_database(tmp_path: Path) -> None:
    here = LabServer(tmp_path / "here")
    for user, said in [("root", "root (admin)"), ("nobody", "nobody (no account)")]:
        config = write_config(here.config.model_copy(update={"user": user}), tmp_path / "c.yaml")
        assert run(config, "whoami").stdout.startswith(f"{said} via {here.db.where}")
    here.db.close()


def test_usage_is_the_same_through_the_service(
    server: LabServer, member: MemberConfig, tmp_path: Path
) -> None:
    here = LabServer(tmp_path / "here")
    seed_usage(here.db)
    seed_usage(server.db)
    local = write_config(here.config.model_copy(update={"user": "bob"}), tmp_path / "local.yaml")
    args = ("usage", "--by", "month", "--by", "user", "--since", "2026-10-01", "--json")
    reports = [run(config, *args) for config in (local, member("bob"))]
    assert [done.exit_code for done in reports] == [0, 0], [d.stderr for d in reports]
    first, second = (json.loads(done.stdout) for done in reports)
    assert first == second
    assert first["by"] == ["month", "user"] and len(first["groups"]) > 1
    assert one_line(run(member("bob"), "usage", "--since", "2026-13-01"), 2).startswith("error:")
    here.db.close()


def test_notification_settings_through_the_service(server: LabServer, member: MemberConfig) -> None:
    alice, bob, root = member("alice"), member("bob"), member("root")
    with http_receiver() as hook:
        assert (
            run(alice, "notify", "set", "--mode", "failures", "--webhook", hook.url).exit_code == 0
        )
        shown = json.loads(run(alice, "notify", "show", "--json").stdout)
        assert shown["user"] == "alice" and shown["mode"] == "failures"
        assert shown["webhook"].startswith("http://127.0.0.1:") and "s3cret" not in shown["webhook"]
        tested = run(alice, "notify", "test")
        assert tested.exit_code == 0 and "webhook: sent" in tested.stdout
        assert len(hook.posts) == 1 and "alice" in json.dumps(hook.posts[0][0])
    assert "only alice or an admin may see" in one_line(
        run(bob, "notify", "show", "--user", "alice"), 3
    )
    changed = run(bob, "notify", "set", "--user", "alice", "--mode", "each")
    assert "only alice or an admin may" in one_line(changed, 3)
    assert "only alice or an admin may" in one_line(
        run(bob, "notify", "test", "--user", "alice"), 3
    )
    assert server.db.users.find_one({"username": "alice"})["notify_mode"] == "failures"
    assert run(root, "notify", "set", "--user", "alice", "--mode", "digest").exit_code == 0
    assert "mode: digest" in run(root, "notify", "show", "--user", "alice").stdout
    assert "no user 'eve'" in one_line(run(root, "notify", "show", "--user", "eve"), 1)


def test_setup_on_a_member_machine_checks_the_service_not_a_store(
    server: LabServer, member: MemberConfig, isolated_home: Path
) -> None:
    alice = member("alice")
    done = run(alice, "setup", "--non-interactive", "--no-cron", "--user", "alice")
    assert done.exit_code == 0, done.output
    written = yaml.safe_load(alice.read_text())
    assert written["service"]["url"] == server.url and "uri" not in written.get("database", {})
    assert not (isolated_home / ".local" / "share" / "labctl" / "db").exists()
    asked = run(alice, "setup", "--non-interactive", "--no-cron", "--db-uri", "mongodb://x/y")
    assert "takes no --db-uri" in one_line(asked, 2)
    create_token(server.db, "alice")  # revokes the token on alice's machine
    before = alice.read_text()
    refused = run(alice, "setup", "--non-interactive", "--no-cron", "--email", "a@lab.org")
    assert "refused the token" in one_line(refused, refused.exit_code)
    assert refused.exit_code != 0 and alice.read_text() == before


def test_a_damaged_record_through_the_service_is_a_line_not_a_failure(
    server: LabServer, member: MemberConfig
) -> None:
    good = job_in_state(server.db, server.config)
    bad = {**get_job(server.db, good), "job_id": "j-bad", "updated_at": "not a date"}
    server.db.queue.insert(bad)
    beat(server.db, "jobs", {}, "bob", "h1")
    server.db.meta.update({"kind": "heartbeat"}, {"$unset": {"at": ""}})
    seed_usage(server.db)
    server.db.archive.insert({**get_job(server.db, "j-a1"), "_id": "j-u", "job_id": "j-u"})
    server.db.archive.update({"_id": "j-u"}, {"$set": {"usage": ["abc"]}})
    bob = member("bob")

    queue = run(bob, "queue")
    assert queue.exit_code == 0, queue.stderr
    assert good in queue.stdout
    damaged = [line for line in queue.stdout.splitlines() if line.startswith("damaged ")]
    assert [line.split(":")[0] for line in damaged] == [
        "damaged job j-bad",
        "damaged job j-u",
        "damaged heartbeat heartbeat",
    ]
    assert damaged[0] == "damaged job j-bad: updated_at: " + damaged[0].split(": ", 2)[2]
    usage = run(bob, "usage")
    assert usage.exit_code == 0, usage.stderr
    assert "damaged job j-u: usage.0: Input should be a valid dictionary" in usage.stdout
    status = one_line(run(bob, "status", "j-bad"), 2)
    assert status.startswith("error: job j-bad: updated_at: Input should be a valid datetime")
    doctor = run(bob, "doctor")
    assert "✗ damaged job j-bad: updated_at: Input should be a valid datetime" in doctor.stdout
    assert "✗ damaged heartbeat heartbeat:jobs:" in doctor.stdout


def test_members_are_the_same_through_the_service(
    server: LabServer, tokens: dict[str, str]
) -> None:
    """Through the service as on the database: the same members, never a secret, whoami typed."""
    service = ServiceLab(ServiceConfig(url=server.url), tokens["bob"])
    local = LocalLab(server.config.model_copy(update={"user": "bob"}), server.db)
    set_notify(server.db, "alice", "failures", actor="alice")
    assert service.users() == local.users() and len(local.users()) == 3
    for user in service.users():
        dumped = user.model_dump(exclude_unset=True)
        assert "password_hash" not in dumped and "api_token_sha256" not in dumped
        assert dumped == local.user(user.username).model_dump(exclude_unset=True)
    assert service.user("alice").notify_mode == "failures"
    assert service.notify_of("bob") == local.notify_of("bob")
    assert (service.whoami().username, service.whoami().role) == ("bob", "member")
    assert service.whoami().via == service.where and local.whoami().via == server.db.where

"""The command line end to end, on both backends, through Click's runner."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from labctl.cli import COMMANDS, cli
from labctl.config import Config
from labctl.db import connect
from labctl.errors import DatabaseError
from tests.hostile import alias_bomb, nested


@pytest.fixture
def config_file(config: Config, tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
    path.chmod(0o600)
    return path


@pytest.fixture
def run(config_file: Path):  # type: ignore[no-untyped-def]
    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config_file), *args], input=input)

    return invoke


def log_three(run) -> None:  # type: ignore[no-untyped-def]
    for dataset, user, cls, planes in [
        ("20211215_093527", "charlie", "ARB-diff", "12"),
        ("20211215_141002", "charlie", "ARB-diff", "8"),
        ("20220103_110045", "dana", "spontaneous", "20"),
    ]:
        result = run(
            "log",
            dataset,
            "--user",
            user,
            "--raw-path",
            f"/nfs/{dataset}",
            "--set",
            f"runclass.id={cls}",
            "--set",
            f"n_planes={planes}",
        )
        assert result.exit_code == 0, result.output


def test_log_prints_what_was_stored(run) -> None:  # type: ignore[no-untyped-def]
    result = run(
        "log",
        "20211215_093527",
        "--user",
        "charlie",
        "--raw-path",
        "/nfs/x",
        "--set",
        "runclass.id=ARB-diff",
        "--set",
        "comment=two words",
        "--json",
    )
    assert result.exit_code == 0, result.output
    [doc] = json.loads(result.output)
    assert doc["runclass"] == {"id": "ARB-diff"}
    assert doc["comment"] == "two words"
    assert doc["acquired_at"].startswith("2021-12-15T09:35:27")
    assert doc["created_by"] == "tester"


def test_query_table_json_csv(run) -> None:  # type: ignore[no-untyped-def]
    log_three(run)
    table = run("query", "data_raw_path", "runclass.id", "--where", "user=charlie")
    assert table.exit_code == 0, table.output
    assert "/nfs/20211215_093527" in table.output and "/nfs/20211215_141002" in table.output
    assert "20220103_110045" not in table.output
    assert "2 experiment(s)" in table.output

    as_json = run("query", "n_planes", "--where", "n_planes>=10", "--sort", "-n_planes", "--json")
    assert [d["dataset"] for d in json.loads(as_json.output)] == [
        "20220103_110045",
        "20211215_093527",
    ]

    as_csv = run(
        "query", "user", "runclass.id", "--since", "2021-12-15", "--until", "2021-12-15", "--csv"
    )
    rows = list(csv.reader(io.StringIO(as_csv.output)))
    assert rows == [
        ["dataset", "user", "runclass.id"],
        ["20211215_093527", "charlie", "ARB-diff"],
        ["20211215_141002", "charlie", "ARB-diff"],
    ]

    regex = run("query", "--where", "runclass.id~^spont", "--json")
    assert [d["dataset"] for d in json.loads(regex.output)] == ["20220103_110045"]
    within = run("query", "--where", "user in dana,nobody", "--limit", "5", "--json")
    assert [d["dataset"] for d in json.loads(within.output)] == ["20220103_110045"]
    limited = run("query", "--sort", "-dataset", "--limit", "1", "--json")
    assert [d["dataset"] for d in json.loads(limited.output)] == ["20220103_110045"]


def test_query_says_which_field_a_typo_meant(run) -> None:  # type: ignore[no-untyped-def]
    log_three(run)
    typo = run("query", "n_plane", "--where", "n_plane>=10")
    assert typo.exit_code == 2
    assert typo.output == "error: no entry has a field n_plane; did you mean n_planes?\n"
    assert "field n_plane; did you mean n_planes?" in run("query", "--sort", "-n_plane").output
    nested = run("query", "--where", "runclass.di=ARB-diff")
    assert "no entry has a field runclass.di; did you mean runclass.id?" in nested.output
    operator = run("query", "n_planes", "--where", "n_planes=>10")
    assert operator.exit_code == 2
    assert operator.output.startswith("error: unknown operator '=>' in 'n_planes=>10'")
    assert operator.output.count("\n") == 1


def test_show_and_update(run) -> None:  # type: ignore[no-untyped-def]
    log_three(run)
    again = run("log", "20211215_093527", "--user", "x", "--raw-path", "/y")
    assert again.exit_code != 0
    assert "already logged; use --update" in again.output
    updated = run("log", "20211215_093527", "--update", "--set", "runclass.id=B")
    assert updated.exit_code == 0, updated.output
    shown = run("show", "20211215_093527", "--json")
    doc = json.loads(shown.output)
    assert doc["runclass"]["id"] == "B"
    assert doc["user"] == "charlie"
    assert doc["n_planes"] == 12
    table = run("show", "20211215_093527")
    assert "runclass.id" in table.output and "/nfs/20211215_093527" in table.output


def test_from_file_is_all_or_nothing(run, tmp_path: Path, config: Config) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump(
            [
                {
                    "dataset": "20230101_000001",
                    "user": "a",
                    "data_raw_path": "/a",
                    "runclass": {"id": "X"},
                },
                {"dataset": "20230101_000002", "user": "b", "data_raw_path": "/b"},
            ]
        )
    )
    ok = run("log", "--from-file", str(good))
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            [
                {"dataset": "20230101_000003", "user": "c", "data_raw_path": "/c"},
                {"dataset": "20230101_000004", "user": "d"},  # missing data_raw_path
            ]
        )
    )
    refused = run("log", "--from-file", str(bad))
    assert refused.exit_code == 2
    assert "20230101_000004: missing required field(s) data_raw_path" in refused.output
    dup = tmp_path / "dup.yaml"
    dup.write_text(
        yaml.safe_dump(
            [
                {"dataset": "20230101_000005", "user": "e", "data_raw_path": "/e"},
                {"dataset": "20230101_000001", "user": "a", "data_raw_path": "/a"},
            ]
        )
    )
    assert run("log", "--from-file", str(dup)).exit_code == 1
    with connect(config.database) as db:
        assert sorted(db.data.distinct("dataset")) == ["20230101_000001", "20230101_000002"]
        assert db.data.find_one({"dataset": "20230101_000001"}, ["runclass.id"]) == {
            "runclass": {"id": "X"}
        }


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["log", "2021-12-15", "--user", "a", "--raw-path", "/x"], "not of the form", 2),
        (["log", "20211315_093527", "--user", "a", "--raw-path", "/x"], "not a real date", 2),
        (["log", "20211215_093527", "--user", "a"], "missing required field(s) data_raw_path", 2),
        (
            ["log", "20211215_093527", "--user", "a", "--raw-path", "/x", "--set", "n"],
            "must look like name=value",
            2,
        ),
        (["log"], "give a DATASET id or --from-file", 2),
        (["log", "--from-file", "/does/not/exist.yaml"], "cannot read", 2),
        (["query", "--where", "user"], "cannot read condition", 2),
        (["query", "--where", "user~("], "bad regular expression", 2),
        (["query", "--since", "soon"], "--since takes a date", 2),
        (["query", "--json", "--csv"], "choose one of --json and --csv", 2),
        (["query", "--limit", "-1"], "--limit", 2),
        (["query", "a;b"], "field name", 2),
        (["show", "20211215_093527"], "no dataset 20211215_093527", 1),
        (["log", "20211215_093527", "--update", "--set", "a=1"], "no dataset", 1),
        (["frobnicate"], "No such command", 2),
    ],
)
def test_bad_input_is_one_line_and_non_zero(run, args: list[str], message: str, code: int) -> None:  # type: ignore[no-untyped-def]
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert result.output.startswith("error: ")
    assert result.output.count("\n") == 1
    assert "Traceback" not in result.output


LOG = ["log", "20211215_093527", "--user", "a", "--raw-path", "/x"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [*LOG, "--set", f"x={alias_bomb()}"],
            "field 'x': YAML anchors and aliases are not allowed",
        ),
        ([*LOG, "--set", f"x={nested(1000)}"], "nested deeper than 20 levels"),  # was exit 70
        ([*LOG, "--set", "day=0000-01-01"], "field 'day': an impossible value"),  # was exit 70
        ([*LOG, "--set", "day=2021-13-01"], "month must be in 1..12"),
        ([*LOG, "--set", ".".join(["a"] * 5000) + "=1"], "field name"),  # was exit 70
        ([*LOG, "--set", "cond={$gt: 1}"], "looks like an operator"),
        ([*LOG, "--set", f"n={2**70}"], "cannot be stored"),
        ([*LOG, "--set", "x=0x" + "f" * 5000], "an integer of 20000 bits cannot be stored"),
        ([*LOG, "--set", "x=0b" + "1" * 20000], "an integer of 20000 bits cannot be stored"),
        ([*LOG, "--set", "x=1" + ":59" * 3000], "bits cannot be stored"),  # sexagesimal
        ([*LOG, "--set", "x=.nan"], "nan cannot be stored: not a finite number"),
        ([*LOG, "--set", "x=[-.inf]"], "-inf cannot be stored: not a finite number"),
        ([*LOG, "--set", "_id=x"], "set by labctl"),
        (["query", "--since", "0000-01-01"], "--since takes a date"),  # was exit 70
        (["query", "--until", "2021-13-01"], "--until takes a date"),
        (["query", "--where", "user~(a)\\1"], "bad regular expression"),
    ],
)
def test_malformed_values_are_one_line_exit_2_and_store_nothing(  # type: ignore[no-untyped-def]
    run, args: list[str], message: str
) -> None:
    result = run(*args)
    assert (result.exit_code, result.output.count("\n")) == (2, 1), result.output
    assert result.output.startswith("error: ") and message in result.output
    assert json.loads(run("query", "--json").output) == []


def _entries_file(path: Path, entries: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump(entries))
    return path


def test_a_batch_is_checked_whole_before_the_first_write(  # type: ignore[no-untyped-def]
    run, tmp_path: Path
) -> None:
    """A value beyond 64 bits late in 1,000 entries stored the 998 before it (issue 11)."""
    entries = [
        {"dataset": f"20230101_{i // 60:04d}{i % 60:02d}", "user": "a", "data_raw_path": "/a"}
        for i in range(1000)
    ]
    entries[998]["n"] = 2**70
    refused = run("log", "--from-file", str(_entries_file(tmp_path / "new.yaml", entries)))
    assert refused.exit_code == 2 and "cannot be stored" in refused.output
    assert json.loads(run("query", "--json").output) == []

    del entries[998]["n"]
    assert (
        run("log", "--from-file", str(_entries_file(tmp_path / "ok.yaml", entries))).exit_code == 0
    )
    changes = [{"dataset": e["dataset"], "n": 1} for e in entries]
    changes[998]["n"] = 2**70
    refused = run(
        "log", "--update", "--from-file", str(_entries_file(tmp_path / "u.yaml", changes))
    )
    assert refused.exit_code == 2 and "cannot be stored" in refused.output
    assert "no entry has a field n" in run("query", "--where", "n=1", "--json").output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "- dataset: 20211215_093527\n  user: a\n",
            "entry 1: dataset id 20211215093527 was read as "
            "a number: dataset ids must be quoted in YAML: '20211215_093527'",
        ),
        (alias_bomb(), "YAML anchors and aliases are not allowed"),
        (f"dataset: '20211215_093527'\nx: {nested(1000)}\n", "nested deeper than 20 levels"),
        ("dataset: '20211215_093527'\nday: 2021-13-01\n", "month must be in 1..12"),
        (b"dataset: '20211215_093527'\nuser: J\xfcrgen\n", "is not UTF-8 text (byte 34)"),
    ],
)
def test_a_malformed_entries_file_is_one_line(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, text: str | bytes, message: str
) -> None:
    path = tmp_path / "entries.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = run("log", "--from-file", str(path))
    assert (result.exit_code, result.output.count("\n")) == (2, 1), result.output
    assert f"error: {path}" in result.output and message in result.output


def test_users(run, config: Config) -> None:  # type: ignore[no-untyped-def]
    added = run(
        "user",
        "add",
        "charlie",
        "--name",
        "Charlie B",
        "--email",
        "c@lab.org",
        "--hpc",
        "raven=abc123",
        input="violet-s3cret-pass\nviolet-s3cret-pass\n",
    )
    assert added.exit_code == 0, added.output
    assert "violet-s3cret-pass" not in added.output.split("\n", 2)[-1]
    assert run("user", "add", "dana", "--no-password").exit_code == 0
    listed = json.loads(run("user", "list", "--json").output)
    assert [u["username"] for u in listed] == ["charlie", "dana"]
    assert listed[0]["hpc_accounts"] == {"raven": "abc123"}
    assert all("password_hash" not in u for u in listed)
    assert run("user", "set-role", "dana", "admin").exit_code == 0
    assert (
        run("user", "passwd", "dana", input="another-mauve-pass\nanother-mauve-pass\n").exit_code
        == 0
    )
    with connect(config.database) as db:
        stored = db.users.find_one({"username": "charlie"})
        assert stored is not None
        assert stored["password_hash"].startswith("$argon2id$")
        assert "violet-s3cret-pass" not in json.dumps(stored, default=str)
        from labctl.users import authenticate

        assert authenticate(db, "dana", "another-mauve-pass") is not None
        assert authenticate(db, "dana", "wrong-pass") is None
        assert db.users.find_one({"username": "dana"}, ["role"]) == {"role": "admin"}

    dup = run("user", "add", "charlie", "--no-password")
    assert dup.exit_code == 1 and "duplicate" in dup.output
    mismatch = run("user", "add", "eve", input="password1\npassword2\n" * 3)
    assert mismatch.exit_code != 0
    short = run("user", "add", "eve", input="short\nshort\n")
    assert short.exit_code == 2 and "at least 8" in short.output
    unknown = run("user", "passwd", "nobody")
    assert unknown.exit_code == 1 and "no user 'nobody'" in unknown.output
    assert run("user", "set-role", "dana", "boss").exit_code == 2


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 8 characters"),
        ("password", "too easy to guess"),
        ("Welcome2024!", "too easy to guess"),
        ("eve-rocks-42", "must not contain the username or e-mail"),
        ("evans.lab.99", "must not contain the username or e-mail"),
    ],
)
def test_weak_passwords_are_refused_in_one_line(run, password: str, message: str) -> None:  # type: ignore[no-untyped-def]
    typed = f"{password}\n{password}\n"
    added = run("user", "add", "eve", "--email", "evans@lab.org", input=typed)
    assert added.exit_code == 2, added.output
    assert added.output.splitlines()[-1].startswith("error: ") and message in added.output
    assert run("user", "add", "eve", "--email", "evans@lab.org", "--no-password").exit_code == 0
    changed = run("user", "passwd", "eve", input=typed)
    assert changed.exit_code == 2 and message in changed.output.splitlines()[-1]
    assert run("user", "passwd", "eve", input="good old horse\n" * 2).exit_code == 0


def test_invalid_config_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("databse: {}\n")
    result = CliRunner().invoke(cli, ["--config", str(bad), "query"])
    assert result.exit_code == 2
    assert result.output == f"error: {bad}: unknown key 'databse'\n"


def test_unreachable_mongodb_fails_fast_naming_the_host(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "database:\n  uri: mongodb://127.0.0.1:9,127.0.0.1:10/?replicaSet=rs0\n"
        "  timeout_seconds: 1\n"
    )
    result = CliRunner().invoke(cli, ["--config", str(cfg), "query"])
    assert result.exit_code == 1
    assert result.output == "error: cannot reach MongoDB at 127.0.0.1:9,127.0.0.1:10 within 1 s\n"


def test_console_script_and_module_entry_points(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    bin_dir = Path(sys.executable).parent
    for argv in (
        [str(bin_dir / "labctl"), "--version"],
        [sys.executable, "-m", "labctl", "--version"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0 and "0.1.0" in done.stdout
    bad = subprocess.run(
        [str(bin_dir / "labctl"), "show", "nope"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (bad.returncode, bad.stderr) == (
        2,
        "error: dataset id 'nope' is not of the form YYYYMMDD_HHMMSS\n",
    )


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "2 experiment(s)" in result.output
    assert "demo finished: 3 experiments logged and queried" in result.output
    assert (tmp_path / "demo/db").is_dir()


def test_db_init_enforces_required_fields_on_mongodb(run, config: Config) -> None:  # type: ignore[no-untyped-def]
    result = run("db", "init")
    assert result.exit_code == 0, result.output
    must_have = result.output.split("data entries must have ")[1].strip().split(", ")
    assert sorted(must_have) == ["acquired_at", "data_raw_path", "dataset", "user"]
    with connect(config.database) as db:
        incomplete = {"dataset": "20211215_093527", "acquired_at": None, "user": "x"}
        if config.database.embedded:  # labctl validates; the embedded store has no validator
            db.data.insert(incomplete)
            assert db.data.count() == 1
        else:
            with pytest.raises(DatabaseError):
                db.data.insert(incomplete)
            assert db.data.count() == 0


SECRET = "S3cr3t-pw"


@pytest.mark.parametrize(
    "uri",
    [
        f"mongodb://lab:{SECRET}@127.0.0.1:9,127.0.0.1:10/?replicaSet=rs0",  # nobody listens
        f"mongodb://lab:{SECRET}@db.example:notaport/",
        f"mongo://lab:{SECRET}@db.example/",
    ],
)
def test_no_output_shows_the_database_password(tmp_path: Path, uri: str) -> None:
    """Cron logs keep stderr: neither a command nor `labctl setup` prints the password."""
    path = tmp_path / "c.yaml"
    path.write_text(f"database:\n  uri: '{uri}'\n  timeout_seconds: 0.5\n")
    path.chmod(0o600)
    quick = tmp_path / "quick.yaml"
    quick.write_text("database:\n  timeout_seconds: 0.5\n")
    runner = CliRunner()
    for args in (["query"], ["db", "init"], ["user", "list"]):
        result = runner.invoke(cli, ["--config", str(path), *args])
        assert result.exit_code != 0 and SECRET not in result.output, result.output
        env = {"LABCTL_DB_URI": uri}
        from_env = runner.invoke(cli, ["--config", str(quick), *args], env=env)
        assert from_env.exit_code != 0 and SECRET not in from_env.output, from_env.output
    flags = ["--non-interactive", "--db-uri", uri, "--no-cron", "--no-mount"]
    setup = runner.invoke(cli, ["--config", str(quick), "setup", *flags])
    assert setup.exit_code != 0 and SECRET not in setup.output, setup.output
    asked = runner.invoke(cli, ["--config", str(path), "setup", "--no-cron"], input="\n" * 8)
    assert "MongoDB URI ('embedded': no server) [" in asked.output
    assert SECRET not in asked.output, asked.output


def test_every_command_is_in_the_module_the_table_names() -> None:
    for lazy in set(COMMANDS.values()):
        importlib.import_module(f"labctl.cli.{lazy.module}")
    found = {name: command.callback.__module__ for name, command in cli.commands.items()}
    assert found == {name: f"labctl.cli.{lazy.module}" for name, lazy in COMMANDS.items()}


def test_a_mistyped_command_names_the_closest_ones(run) -> None:  # type: ignore[no-untyped-def]
    typo = run("quer")
    assert typo.exit_code == 2
    assert typo.output.startswith("error: No such command 'quer'; did you mean query?")
    assert typo.output.count("\n") == 1
    sub = run("db", "migrat")
    assert sub.exit_code == 2 and "did you mean migrate?" in sub.output


def test_help_loads_no_driver_and_no_rich() -> None:
    """`labctl --help` lists every command without loading any of them, pydantic, pymongo, Rich,
    pandas or FastAPI."""
    modules = [f"labctl.cli.{lazy.module}" for lazy in COMMANDS.values()]
    heavy = ("pydantic", "pymongo", "litemongo", "rich", "pandas", "fastapi", "uvicorn", *modules)
    code = (
        "import sys\nfrom labctl.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "--help"], capture_output=True, text=True, check=True
    )
    assert re.search(r"\n  submit +Queue an analysis job on DATASET\.\n", done.stdout)
    assert done.stdout.splitlines()[-1] == "[]"

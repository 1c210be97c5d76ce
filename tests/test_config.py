from pathlib import Path

import pytest

from labctl.config import load_config
from labctl.errors import ConfigError, redact
from labctl.install.doctor import check_config, check_database
from labctl.jobs.declarations import job_types_at


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_defaults_use_the_embedded_store_under_xdg_data_home(isolated_home: Path) -> None:
    config = load_config()
    assert config.database.embedded
    assert config.database.path == isolated_home / ".local/share/labctl/db"
    assert config.data.required == ["user", "data_raw_path"]


def test_lookup_order_explicit_then_env_then_home(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(isolated_home / ".config/labctl/config.yaml", "user: from_home\n")
    assert load_config().user == "from_home"
    env_file = write(tmp_path / "env.yaml", "user: from_env\n")
    monkeypatch.setenv("LABCTL_CONFIG", str(env_file))
    assert load_config().user == "from_env"
    explicit = write(tmp_path / "explicit.yaml", "user: explicit\n")
    assert load_config(explicit).user == "explicit"


def test_xdg_config_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    write(tmp_path / "xdg/labctl/config.yaml", "user: xdg\n")
    assert load_config().user == "xdg"


def test_schema_fields_and_mongo_uri(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "database:\n  uri: mongodb://a:1,b:2,c:3/?replicaSet=rs0\n  name: lab\n"
        "data:\n  fields:\n    user: {type: str, required: true}\n"
        "    n_planes: {type: int}\n    runclass.id: {type: str, required: true}\n",
    )
    config = load_config(path)
    assert config.database.uri == "mongodb://a:1,b:2,c:3/?replicaSet=rs0"
    assert not config.database.embedded
    assert config.data.required == ["user", "runclass.id"]
    assert config.data.fields["n_planes"].type == "int"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("databse:\n  uri: embedded\n", "unknown key 'databse'"),
        ("database:\n  urii: x\n", "unknown key 'database.urii'"),
        ("data:\n  fields:\n    x: {type: complex}\n", "data.fields.x.type"),
        ("data:\n  fields:\n    bad-name: {type: str}\n", "bad-name"),
        ("database:\n  uri: postgres://x\n", "must be 'embedded' or a mongodb:// URI"),
        ("database: [1, 2\n", "invalid YAML at line"),
        ("- just\n- a list\n", "expected a mapping"),
        ("database:\n  timeout_seconds: -1\n", "database.timeout_seconds"),
        ("database:\n  query_seconds: 0\n", "database.query_seconds"),
        ('data:\n  fields:\n    "user\\n": {type: str}\n', "must be dotted identifiers"),
        ('clusters:\n  "raven\\n": {type: local, scratch: /tmp/x}\n', "cluster name"),
        ("user: 2021-13-01\n", "invalid YAML"),  # an impossible date: was exit 70
        ("x: " + "{a: " * 5000 + "1" + "}" * 5000, "nested deeper than 50 levels"),  # was exit 70
        ("x: " + "[" * 5000 + "]" * 5000, "nested deeper than 50 levels"),
        ("database:\n  uri: 'mongodb://lab:pw@[::1'\n", "not a valid URI"),  # was exit 70
    ],
)
def test_invalid_config_names_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_malformed_uri_in_the_environment_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^LABCTL_DB_URI: uri: .*not a valid URI"):
        load_config(None, env={"LABCTL_DB_URI": "mongodb://lab:pw@[::1"})


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("user: J\xfcrgen\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 7\)$"):
        load_config(path)


def test_missing_or_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path)  # a directory


def test_password_in_a_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    text = "database:\n  uri: mongodb://lab:s3cret@db.example:27017/\n"
    loose = write(tmp_path / "loose.yaml", text, mode=0o644)
    with pytest.raises(ConfigError, match=r"readable by others.*chmod 600") as err:
        load_config(loose)
    assert "s3cret" not in str(err.value)
    private = write(tmp_path / "private.yaml", text, mode=0o600)
    assert load_config(private).database.uri.endswith("@db.example:27017/")


def test_secrets_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "database:\n  uri: mongodb://lab@db.example/\n", 0o644)
    env = {"LABCTL_DB_PASSWORD": "p@ss/word"}
    assert load_config(path, env=env).database.uri == "mongodb://lab:p%40ss%2Fword@db.example/"
    env = {"LABCTL_DB_URI": "mongodb://other:1/?replicaSet=rs0"}
    assert load_config(path, env=env).database.uri == "mongodb://other:1/?replicaSet=rs0"
    with pytest.raises(ConfigError, match="LABCTL_DB_URI"):
        load_config(path, env={"LABCTL_DB_URI": "http://nope"})
    with pytest.raises(ConfigError, match="names no user"):
        load_config(None, env={"LABCTL_DB_URI": "mongodb://h/", "LABCTL_DB_PASSWORD": "x"})


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    config = load_config(example)
    assert config.database.embedded
    assert "runclass.id" in config.data.fields
    types = job_types_at(config)  # as this checkout's pipelines/ declares them
    on_raven = types.get("diff_registration", "raven")
    assert on_raven is not None and on_raven.resources.mem == "16G"
    assert on_raven.max_resources is not None and on_raven.max_resources.time == "24:00:00"
    variant = types.get("file_stats_split")
    assert variant is not None and variant.splittable and "sleep_seconds" in variant.options


# --- no message shows a database password ------------------------------------------------------

SECRET = "S3cr3t-pw"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"mongodb://lab:{SECRET}@db1:27017,db2/?replicaSet=rs0", "mongodb://lab:***@db1:27017"),
        (f"not 'mongo://lab:{SECRET}@h/', sorry", "not 'mongo://lab:***@h/', sorry"),
        (f"mongodb://lab:p@ss/{SECRET}@h/ and x", "mongodb://lab:***@h/ and x"),  # unescaped
        (f"a mongodb+srv://u:{SECRET}@c.example b://v:{SECRET}@d", "b://v:***@d"),
        ("mongodb://lab@db.example:27017/ keeps its user", "mongodb://lab@db.example:27017/"),
        ("mongodb://db.example:27017/ has no user", "mongodb://db.example:27017/ has"),
    ],
)
def test_redact_hides_the_password_of_every_uri(text: str, shown: str) -> None:
    assert shown in redact(text)
    assert SECRET not in redact(text) and "p@ss" not in redact(text)


@pytest.mark.parametrize(
    "uri", [f"mongo://lab:{SECRET}@db.example/", f"http://lab:{SECRET}@db.example/"]
)
def test_config_errors_never_show_the_password(tmp_path: Path, uri: str) -> None:
    path = write(tmp_path / "c.yaml", f"database:\n  uri: '{uri}'\n")
    for source, env in ((path, {}), (None, {"LABCTL_DB_URI": uri})):
        with pytest.raises(ConfigError, match="mongodb:// URI") as err:
            load_config(source, env=env)
        assert SECRET not in str(err.value) and "lab:***@db.example" in str(err.value)


@pytest.mark.parametrize(
    "uri",
    [
        f"mongodb://lab:{SECRET}@127.0.0.1:9,127.0.0.1:10/?replicaSet=rs0",  # nobody listens
        f"mongodb://lab:{SECRET}@db.example:notaport/",
        f"mongodb://lab:{SECRET}@@db.example/",
    ],
)
def test_doctor_never_shows_the_password(tmp_path: Path, uri: str) -> None:
    path = write(tmp_path / "c.yaml", f"database:\n  uri: '{uri}'\n  timeout_seconds: 0.5\n")
    check, config = check_config(path)
    assert check.ok and config is not None
    check, db = check_database(config.database)
    assert not check.ok and db is None
    assert SECRET not in f"{check.detail} {check.hint}"
    wrong = write(tmp_path / "wrong.yaml", f"database:\n  uri: 'mongo://lab:{SECRET}@h/'\n")
    check, _ = check_config(wrong)
    assert not check.ok and SECRET not in check.detail

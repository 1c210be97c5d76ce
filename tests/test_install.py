"""`labctl setup` against the real testbed, and install.py from a copy of this working tree.

Nothing here mocks ssh, ssh-keygen, crontab or pip. The crontab is restored after each test.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from labctl.cli import cli
from labctl.config import load_config
from labctl.install.cron import BEGIN
from labctl.install.onboarding import write_config
from tests.test_cron_live import FOREIGN, crontab, saved_crontab
from tests.testbed import HOST, needs_testbed, remote_scratch

REPO = Path(__file__).resolve().parent.parent
pytestmark = [needs_testbed, pytest.mark.testbed]


@pytest.fixture(autouse=True)
def user_crontab() -> Iterator[None]:
    with saved_crontab():
        crontab("-", input=FOREIGN)
        yield


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lab_config(path: Path, **cluster: object) -> Path:
    """The lab's shared settings: the testbed cluster (no user, no key: each member's own)."""
    testbed = {
        "type": "ssh",
        "host": HOST,
        "port": int(os.environ["HPC_SSH_PORT"]),
        "known_hosts": os.environ["HPC_KNOWN_HOSTS"],
        "scratch": "/home/hpcuser/labctl-scratch",
        "accounting": "jobcomp",
        **cluster,
    }
    settings = {"clusters": {"testbed": testbed}, "data": {"fields": {"n_planes": {"type": "int"}}}}
    path.write_text(yaml.safe_dump(settings))
    return path


def setup(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["setup", *args], input=input)


def answers(lab: Path, *extra: str) -> list[str]:
    return [
        "--non-interactive", "--no-cron", "--lab-config", str(lab),
        "--user", "charlie", "--email", "charlie@lab.org", "--hpc-user", "testbed=hpcuser",
        "--key", f"testbed={os.environ['HPC_SSH_KEY']}", *extra,
    ]  # fmt: skip


def config_path(home: Path) -> Path:
    return home / ".config" / "labctl" / "config.yaml"


def test_setup_writes_a_private_config_keeping_other_settings(
    isolated_home: Path, tmp_path: Path
) -> None:
    path = config_path(isolated_home)
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({"user": "old", "job_types": {"pre": {"entry": "preprocess"}}}))
    result = setup(*answers(lab_config(tmp_path / "lab.yaml")))
    assert result.exit_code == 0, result.output
    assert f"wrote {path} (mode 0600)" in result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary left
    config = load_config(path)
    assert (config.user, config.email) == ("charlie", "charlie@lab.org")
    assert config.job_types["pre"].entry == "preprocess"  # kept: setup does not ask about it
    assert config.data.fields["n_planes"].type == "int"  # from the lab config
    cluster = config.clusters["testbed"]
    assert (cluster.user, cluster.key_file) == ("hpcuser", Path(os.environ["HPC_SSH_KEY"]))
    written = yaml.safe_load(path.read_text())  # cron has another environment: paths pinned
    assert written["database"]["path"] == str(isolated_home / ".local/share/labctl/db")
    assert written["watchdog"]["log_dir"] == str(isolated_home / ".local/share/labctl/logs")
    assert crontab("-l").stdout == FOREIGN  # --no-cron

    again = setup(*answers(tmp_path / "lab.yaml"))
    assert again.exit_code == 0 and load_config(path) == config


def test_setup_asks_and_creates_a_key(isolated_home: Path, tmp_path: Path) -> None:
    lab = lab_config(tmp_path / "lab.yaml")
    key = isolated_home / ".ssh" / "id_ed25519"
    typed = "dana\ndana@lab.org\n\nhpcuser\n\ny\n"  # user, e-mail, URI, HPC user, key, create
    result = setup("--no-cron", "--lab-config", str(lab), input=typed)
    assert result.exit_code == 0, result.output
    public = (isolated_home / ".ssh" / "id_ed25519.pub").read_text().strip()
    assert public.startswith("ssh-ed25519 ") and public.endswith(
        f"labctl dana@{socket.gethostname()}"
    )
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    lines = result.output.splitlines()
    where = lines.index(
        "add this line to ~/.ssh/authorized_keys of hpcuser on 127.0.0.1 (testbed):"
    )
    assert lines[where + 1] == f"  {public}"
    config = load_config(config_path(isolated_home))
    assert (config.user, config.database.uri) == ("dana", "embedded")
    assert config.clusters["testbed"].key_file == key


def test_setup_of_a_two_factor_cluster_asks_no_key_and_logs_in_nowhere(
    isolated_home: Path, tmp_path: Path
) -> None:
    lab = lab_config(tmp_path / "lab.yaml", auth="interactive", proxy_jump=["gw@127.0.0.1:9"])
    mfa_log = Path(os.environ.get("HPC_MFA_LOG", os.devnull))
    before = mfa_log.read_text() if mfa_log.is_file() else ""
    typed = "dana\ndana@lab.org\n\nabc123\n"  # user, e-mail, URI, HPC user: no key question
    result = setup("--no-cron", "--lab-config", str(lab), input=typed)
    assert result.exit_code == 0, result.output
    assert "SSH private key" not in result.output
    assert not (isolated_home / ".ssh").exists()  # no key made
    assert (
        "testbed asks for a password and a one-time password: run 'labctl connect testbed' to "
        "open its session; the watchdog waits for it"
    ) in result.output.splitlines()
    cluster = load_config(config_path(isolated_home)).clusters["testbed"]
    assert (cluster.user, cluster.auth, cluster.key_file) == ("abc123", "interactive", None)
    assert (mfa_log.read_text() if mfa_log.is_file() else "") == before


def nothing_written(home: Path, before: bytes | None) -> bool:
    """The config as `before` (None: no file, nor the directories for it), the crontab as set."""
    path = config_path(home)
    if before is None:
        return not (home / ".config").exists() and crontab("-l").stdout == FOREIGN
    leftovers = list(path.parent.glob(".*"))
    return path.read_bytes() == before and not leftovers and crontab("-l").stdout == FOREIGN


@pytest.mark.parametrize("existing", [False, True])
def test_setup_bad_input_is_one_line_and_writes_nothing(
    isolated_home: Path, tmp_path: Path, existing: bool
) -> None:
    before = None
    if existing:
        config_path(isolated_home).parent.mkdir(parents=True)
        config_path(isolated_home).write_text("user: keep-me\n")
        before = config_path(isolated_home).read_bytes()
    lab = lab_config(tmp_path / "lab.yaml")
    other_key = tmp_path / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    port = closed_port()
    cases = [
        (answers(lab, "--hpc-user", "nope=x"), 2,
         "error: unknown cluster 'nope' (configured: testbed)"),
        (answers(lab, "--email", "not-an-address"), 2, "email: String should match pattern"),
        (answers(tmp_path / "none.yaml"), 2, f"error: no lab config at {tmp_path / 'none.yaml'}"),
        (answers(lab, "--key", f"testbed={other_key}"), 1,
         f"error: cluster testbed: hpcuser@127.0.0.1:2222 rejected key {other_key}"),
        (answers(lab_config(tmp_path / "down.yaml", port=port)), 1,
         f"error: cluster testbed: cannot reach hpcuser@127.0.0.1:{port}: ssh: connect to host "
         f"127.0.0.1 port {port}: Connection refused"),
    ]  # fmt: skip
    for args, code, message in cases:
        result = setup(*[a for a in args if a != "--no-cron"])  # the crontab must stay too
        assert result.exit_code == code, result.output
        assert len(result.output.splitlines()) == 1 and message in result.output, result.output
        assert nothing_written(isolated_home, before), message


def test_setup_refuses_an_unwritable_config_directory(tmp_path: Path) -> None:
    lab = lab_config(tmp_path / "lab.yaml")
    (tmp_path / "a-file").write_text("")
    under_file = tmp_path / "a-file" / "labctl" / "config.yaml"
    result = CliRunner().invoke(cli, ["--config", str(under_file), "setup", *answers(lab)])
    assert result.exit_code == 2
    assert result.output == (
        f"error: cannot write {under_file}: {tmp_path / 'a-file'} is not a writable directory\n"
    )
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        target = read_only / "config.yaml"
        result = CliRunner().invoke(cli, ["--config", str(target), "setup", *answers(lab)])
        assert result.exit_code == 2
        assert (
            result.output
            == f"error: cannot write {target}: {read_only} is not a writable directory\n"
        )
    finally:
        subprocess.run(["umount", str(read_only)], check=True)


def test_a_failed_crontab_step_puts_the_old_config_back(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "config.yaml"

    def fail(_: object) -> None:
        raise RuntimeError("crontab broke")

    with pytest.raises(RuntimeError):
        write_config(path, {"user": "new"}, then=fail)
    assert not (tmp_path / "conf").exists()  # the directory it made is gone too
    path.parent.mkdir()
    path.write_text("user: old\n")
    with pytest.raises(RuntimeError):
        write_config(path, {"user": "new"}, then=fail)
    assert path.read_text() == "user: old\n"
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]


def test_setup_stores_a_database_password_only_privately(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABCTL_DB_PASSWORD", "s3cret/:@")
    uri = "mongodb://charlie@db.lab:27017/?replicaSet=rs0"
    args = answers(lab_config(tmp_path / "lab.yaml"), "--db-uri", uri, "--store-db-password")
    result = setup(*args, "--no-verify")
    assert result.exit_code == 0, result.output
    path = config_path(isolated_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = yaml.safe_load(path.read_text())["database"]["uri"]
    assert written == "mongodb://charlie:s3cret%2F%3A%40@db.lab:27017/?replicaSet=rs0"
    monkeypatch.delenv("LABCTL_DB_PASSWORD")
    assert setup(*answers(tmp_path / "lab.yaml"), "--store-db-password").exit_code == 2


# install.py, end to end


def copy_tree(dest: Path) -> Path:
    """This working tree as git sees it (tracked and untracked, not ignored), committed or not."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def run(argv: list[str], home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABCTL_", "XDG_"))}
    env["HOME"] = str(home)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def cron_lines(crontab_text: str) -> list[str]:
    """The commands of labctl's block as cron runs them (after the five time fields, with
    cron's `\\%` read as `%`)."""
    block = crontab_text[crontab_text.index(BEGIN) :]
    lines = [line for line in block.splitlines() if line[:1].isdigit() or line[:1] == "*"]
    return [line.split(None, 5)[5].replace("\\%", "%") for line in lines]


def as_cron(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`command` run as cron runs a crontab line: `sh -c` in HOME, with cron's environment."""
    env = {"HOME": str(home), "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["/bin/sh", "-c", command], cwd=home, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_install_py_end_to_end(isolated_home: Path, tmp_path: Path) -> None:
    """Fresh install from a clone in ~/labctl (as the README says), cron's lines run as cron runs
    them, doctor all green, install again, a bad re-run, then uninstall."""
    home, venv = isolated_home, tmp_path / "venv"
    tree = copy_tree(home / "labctl")  # in ~, where cron's lines and a member's sessions start
    git = ["git", "-C", str(tree), "-c", "user.name=labctl tests", "-c", "user.email=t@lab"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "a clone"]):
        subprocess.run([*git, *args], check=True)  # a clone: its pipelines/ is the checkout
    with remote_scratch() as data:  # never the account's home: a left mount would expose it
        lab = lab_config(tmp_path / "lab.yaml", data_dir=data, mount_point=str(tmp_path / "mnt"))
        installed_mounted_and_removed(home, tree, venv, lab, tmp_path)


def installed_mounted_and_removed(
    home: Path, tree: Path, venv: Path, lab: Path, tmp_path: Path
) -> None:
    install = [sys.executable, str(tree / "install.py"), "--venv", str(venv)]
    setup_args = answers(lab, "--mount")
    setup_args.remove("--no-cron")
    config = config_path(home)

    first = run([*install, *setup_args], home)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "crontab: labctl block installed" in first.stdout
    assert f"mounted {tmp_path / 'mnt'}" in first.stdout
    labctl = str(venv / "bin" / "labctl")
    logs = home / ".local" / "share" / "labctl" / "logs"
    for command in cron_lines(crontab("-l").stdout):  # the clone ~/labctl shadows nothing
        done = as_cron(command, home)
        assert done.returncode == 0 and not done.stdout + done.stderr, command
    for stage in ("scan", "transfers", "jobs"):  # crond itself may be running the same line:
        log, deadline = logs / f"{stage}.log", time.monotonic() + 90  # then `flock -n` skips ours
        while not (log.exists() and f" {stage}: " in log.read_text()):
            assert time.monotonic() < deadline, f"{log} has no line of the {stage} stage"
            time.sleep(0.5)
    session = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from labctl import dbquery; print(dbquery)"],
        cwd=home, env={**os.environ, "HOME": str(home)}, capture_output=True, text=True,
    )  # fmt: skip
    assert session.returncode == 0 and "function dbquery" in session.stdout, session.stderr
    doctor = run([labctl, "doctor"], home)
    print(doctor.stdout)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert all(line.startswith(("✓", "    ")) for line in doctor.stdout.splitlines())
    block = crontab("-l").stdout
    assert block.startswith(FOREIGN) and f"{venv}/bin/python" in block
    written = config.read_bytes()

    again = run([*install, *setup_args], home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "is installed already (pyproject.toml unchanged)" in again.stdout
    assert "crontab: labctl block already up to date" in again.stdout
    assert crontab("-l").stdout == block and config.read_bytes() == written

    bad = run([*install, *setup_args, "--hpc-user", "nope=x"], home)
    assert bad.returncode == 2
    assert "error: unknown cluster 'nope' (configured: testbed)" in bad.stderr
    assert crontab("-l").stdout == block and config.read_bytes() == written and venv.is_dir()

    gone = run([*install, "--uninstall", "--remove-config"], home)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert crontab("-l").stdout == FOREIGN
    assert not venv.exists() and not config.exists()
    assert not (home / ".local" / "bin" / "labctl").is_symlink()
    assert not os.path.ismount(tmp_path / "mnt")


def test_install_py_removes_its_venv_when_a_step_fails(isolated_home: Path, tmp_path: Path) -> None:
    home, tree, venv = isolated_home, copy_tree(tmp_path / "labctl"), tmp_path / "venv"
    (tree / "pyproject.toml").write_text("[project\n")  # pip cannot install this
    done = run([sys.executable, str(tree / "install.py"), "--venv", str(venv),
                "--non-interactive"], home)  # fmt: skip
    assert done.returncode != 0
    assert f"failed: removing {venv} again" in done.stdout
    assert not venv.exists() and not config_path(home).exists()
    assert crontab("-l").stdout == FOREIGN

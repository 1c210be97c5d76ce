"""sshfs mounts: the argv and /proc/mounts parsing, then real mounts of the testbed's sshd."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from labctl.cli import cli
from labctl.compute.cluster import ssh_target
from labctl.compute.mount import (
    MountError,
    mount,
    mount_spec,
    mount_type,
    mounted_type,
    sshfs_argv,
    umount,
)
from labctl.compute.transport import AuthError, ssh_command
from labctl.compute.transport.target import config_text
from labctl.config import ClusterConfig
from labctl.install.doctor import check_mount
from tests.testbed import hpc_cluster, needs_testbed, remote_scratch


def cluster(**changes: object) -> ClusterConfig:
    settings: dict[str, object] = {
        "host": "hpc.lab.org",
        "user": "abc",
        "port": 2022,
        "key_file": "/keys/id, with comma",
        "known_hosts": "/keys/known_hosts",
        "scratch": "/scratch/abc",
        "data_dir": "/data/abc",
        "mount_point": "/mnt/hpc data",
    }
    return ClusterConfig.model_validate({**settings, **changes})


def test_sshfs_argv_rides_the_session_like_every_other_ssh_use() -> None:
    config = cluster()
    target = ssh_target("hpc", config)
    assert target is not None
    argv = sshfs_argv(mount_spec("hpc", config), target)
    assert argv[:5] == ["sshfs", "hpc:/data/abc", "/mnt/hpc data", "-o", "reconnect"]
    assert argv[5:] == ssh_command(target)[1:]  # the same -F file and -o options as ssh's
    assert 'IdentityFile "/keys/id, with comma"' in Path(argv[6]).read_text()
    ipv6 = ssh_target("hpc", cluster(host="fe80::1"))
    assert ipv6 is not None and "HostName fe80::1" in config_text(ipv6)


def test_sshfs_escapes_commas_in_options() -> None:
    """FUSE splits -o values at a bare comma: a session path with one stays one option."""
    target = ssh_target("hpc", cluster())
    assert target is not None
    odd = replace(target, directory=tempfile.mkdtemp(prefix="a,b", dir="/tmp"))
    argv = sshfs_argv(mount_spec("hpc", cluster()), odd)
    assert f"ControlPath={odd.control_path}".replace(",", "\\,") in argv


def test_mount_type_reads_escaped_proc_mounts() -> None:
    mounts = (
        "proc /proc proc rw 0 0\n"
        "abc@hpc:/data /mnt/hpc\\040data fuse.sshfs rw,nosuid 0 0\n"
        "tmpfs /mnt/other tmpfs rw 0 0\n"
    )
    assert mount_type(Path("/mnt/hpc data"), mounts) == "fuse.sshfs"
    assert mount_type(Path("/mnt/hpc"), mounts) is None


def test_mount_needs_a_configured_ssh_cluster() -> None:
    with pytest.raises(MountError, match="no data_dir and mount_point"):
        mount_spec("hpc", cluster(data_dir=None, mount_point=None))
    local = ClusterConfig(type="local", scratch="/tmp/x", data_dir="/d", mount_point="/m")
    with pytest.raises(MountError, match="is this machine"):
        mount_spec("here", local)


def test_config_wants_data_dir_and_mount_point_together() -> None:
    with pytest.raises(ValueError, match="set both or neither"):
        cluster(mount_point=None)
    with pytest.raises(ValueError, match="absolute path"):
        cluster(mount_point="relative/dir")


def test_missing_sshfs_or_fuse_is_said_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = cluster(mount_point=str(tmp_path / "mnt"))
    with pytest.raises(MountError, match=r"^FUSE is unavailable: /nonexistent/fuse is missing"):
        mount("hpc", config, fuse_device=Path("/nonexistent/fuse"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no sshfs on it
    with pytest.raises(MountError, match=r"^sshfs is not installed"):
        mount("hpc", config)


def test_mount_point_must_be_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(MountError, match="exists and is not a directory"):
        mount("hpc", cluster(mount_point=str(tmp_path / "file")))
    with pytest.raises(MountError, match="is not empty"):
        mount("hpc", cluster(mount_point=str(tmp_path / "full")))


needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing: no FUSE in this machine"
)


@pytest.fixture
def testbed_mount(tmp_path: Path) -> Iterator[ClusterConfig]:
    """The testbed cluster with a fresh remote data_dir holding one file; unmounted after."""
    with remote_scratch() as remote:
        subprocess.run(
            ["ssh", "-F", os.environ["HPC_SSH_CONFIG"], "hpc", f"echo hello > {remote}/file.txt"],
            check=True, timeout=30,
        )  # fmt: skip
        config = hpc_cluster(remote).model_copy(
            update={"data_dir": remote, "mount_point": tmp_path / "mnt point"}
        )
        yield config
        if mounted_type(tmp_path / "mnt point"):
            subprocess.run(["fusermount3", "-u", str(tmp_path / "mnt point")], check=False)


@needs_testbed
@needs_fuse
@pytest.mark.testbed
def test_mount_and_umount_the_testbed(testbed_mount: ClusterConfig) -> None:
    config = testbed_mount
    point = config.mount_point
    assert point is not None
    assert mount("hpc", config) is True
    assert mounted_type(point) == "fuse.sshfs"
    assert (point / "file.txt").read_text() == "hello\n"
    assert check_mount("hpc", config).ok
    assert mount("hpc", config) is False  # already mounted

    assert umount("hpc", config) is True
    assert mounted_type(point) is None
    assert umount("hpc", config) is False
    assert not check_mount("hpc", config).ok


@needs_testbed
@needs_fuse
@pytest.mark.testbed
def test_mount_cli_and_its_errors(testbed_mount: ClusterConfig, tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    clusters = {"hpc": testbed_mount.model_dump(mode="json")}
    config_path.write_text(yaml.safe_dump({"clusters": clusters}))
    point = testbed_mount.mount_point

    def labctl(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["--config", str(config_path), *args])
        return result.exit_code, result.output

    assert labctl("mount", "nope") == (2, "error: unknown cluster 'nope' (configured: hpc)\n")
    assert labctl("mount") == (0, f"mounted {point}\n")
    assert labctl("mount", "hpc") == (0, f"{point} is mounted already\n")
    assert labctl("umount") == (0, f"unmounted {point}\n")
    assert labctl("umount", "hpc") == (0, f"{point} is not mounted\n")


@needs_testbed
@needs_fuse
@pytest.mark.testbed
def test_mount_names_a_wrong_key_or_a_missing_directory(
    testbed_mount: ClusterConfig, tmp_path: Path
) -> None:
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(AuthError, match="rejected key"):
        mount("hpc", testbed_mount.model_copy(update={"key_file": key}))
    missing = testbed_mount.model_copy(update={"data_dir": "/home/hpcuser/no/such/dir"})
    with pytest.raises(MountError, match="has no directory /home/hpcuser/no/such/dir"):
        mount("hpc", missing)
    assert testbed_mount.mount_point is not None
    assert mounted_type(testbed_mount.mount_point) is None

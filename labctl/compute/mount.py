"""`sshfs` mounts of a cluster's `data_dir` at a local `mount_point`, and unmounting them."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from labctl.compute.cluster import open_cluster
from labctl.compute.transport import CommandError, LocalRunner, SSHTarget, ssh_command
from labctl.config import ClusterConfig
from labctl.errors import LabctlError

FUSE_DEVICE = Path("/dev/fuse")


class MountError(LabctlError):
    """A mount or unmount could not be done."""


@dataclass(frozen=True)
class MountSpec:
    """Which remote directory goes where, for one configured cluster."""

    cluster: str
    data_dir: str
    mount_point: Path

    @property
    def source(self) -> str:
        return f"{self.cluster}:{self.data_dir}"


def mount_spec(name: str, config: ClusterConfig) -> MountSpec:
    """The cluster's mount, or MountError if it is local or has no data_dir/mount_point."""
    if config.type == "local":
        raise MountError(f"cluster {name} is this machine: there is nothing to mount")
    if config.data_dir is None or config.mount_point is None:
        raise MountError(f"cluster {name} has no data_dir and mount_point in the config")
    return MountSpec(name, config.data_dir, config.mount_point)


def _fuse_opt(value: str) -> str:
    """A value inside one `-o` option: FUSE splits options at commas unless escaped."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def sshfs_argv(spec: MountSpec, target: SSHTarget) -> list[str]:
    """The sshfs command: the same ssh config and options as every other use (riding the
    cluster's session, never a prompt), plus reconnecting."""
    ssh = ssh_command(target)  # ["ssh", ("-F", FILE,) "-o", OPTION, ...]: sshfs takes both
    source = f"{target.destination}:{spec.data_dir}"
    argv = ["sshfs", source, str(spec.mount_point), "-o", "reconnect"]
    for flag, value in zip(ssh[1::2], ssh[2::2], strict=True):
        argv += [flag, _fuse_opt(value) if flag == "-o" else value]
    return argv


def _unescape(field: str) -> str:
    """A /proc/mounts field: spaces, tabs, newlines and backslashes are octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_type(path: Path, mounts: str) -> str | None:
    """The file system type mounted at `path` per a /proc/mounts text (the last mount wins)."""
    found = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and _unescape(fields[1]) == str(path):
            found = fields[2]
    return found


def mounted_type(path: Path) -> str | None:
    """The file system type mounted at `path` now, or None (never touches `path` itself, which
    may be a dead mount)."""
    real = Path(os.path.realpath(path.parent)) / path.name
    return mount_type(real, Path("/proc/self/mounts").read_text(encoding="utf-8"))


def _require_tools(fuse_device: Path) -> None:
    if shutil.which("sshfs") is None:
        raise MountError("sshfs is not installed (Debian: apt install sshfs)")
    if not fuse_device.exists():
        raise MountError(
            f"FUSE is unavailable: {fuse_device} is missing "
            "(load the fuse module; in a container, pass --device /dev/fuse)"
        )
    if not os.access(fuse_device, os.R_OK | os.W_OK):
        raise MountError(f"FUSE is unavailable: no permission to open {fuse_device}")


def _prepare(mount_point: Path) -> None:
    """Create the mount point if missing; refuse one that is not an empty directory."""
    if mount_point.exists() and not mount_point.is_dir():
        raise MountError(f"mount point {mount_point} exists and is not a directory")
    try:
        mount_point.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MountError(f"cannot create mount point {mount_point}: {exc.strerror}") from None
    if any(mount_point.iterdir()):
        raise MountError(f"mount point {mount_point} is not empty")


def mount(name: str, config: ClusterConfig, *, fuse_device: Path = FUSE_DEVICE) -> bool:
    """Mount the cluster's data_dir; False if it is mounted already. Raises MountError."""
    spec = mount_spec(name, config)
    if mounted_type(spec.mount_point):
        return False
    _require_tools(fuse_device)
    _prepare(spec.mount_point)
    # A command first: it names a down session, a bad host key or a missing directory clearly.
    cluster = open_cluster(name, config)
    try:
        found = cluster.runner.run(["test", "-d", str(config.data_dir)], check=False, timeout=30)
    finally:
        cluster.close()
    if found.returncode != 0:
        raise MountError(f"cluster {name} has no directory {config.data_dir}")
    assert cluster.target is not None  # mount_spec refused local clusters
    try:
        LocalRunner().run(sshfs_argv(spec, cluster.target), timeout=60)
    except CommandError as exc:
        raise MountError(f"cannot mount {spec.source}: {exc}") from None
    return True


def umount(name: str, config: ClusterConfig) -> bool:
    """Unmount the cluster's mount point; False if nothing was mounted there."""
    spec = mount_spec(name, config)
    if not mounted_type(spec.mount_point):
        return False
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise MountError("fusermount is not installed (Debian: apt install fuse3)")
    try:
        LocalRunner().run([tool, "-u", str(spec.mount_point)], timeout=60)
    except CommandError as exc:
        raise MountError(f"cannot unmount {spec.mount_point}: {exc}") from None
    return True

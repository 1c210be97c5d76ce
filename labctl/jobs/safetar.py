"""Unpacking a tar archive safely on every Python labctl supports.

`TarFile.extractall(filter="data")` refuses members that would land outside the folder, links
that point out of it and device files. It arrived in patch releases (3.11.4, 3.12.0), so Debian
12's Python 3.11.2 lacks it; there `data_member` checks each member itself before unpacking.
"""

from __future__ import annotations

import copy
import os
import tarfile
from pathlib import Path, PurePosixPath

from labctl.errors import LabctlError


class UnsafeArchiveError(LabctlError):
    """A tar member would land outside its folder, links out of it, or is a device or fifo."""


def extract_all(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack every member of `tar` into `dest`, a new empty folder, as the "data" filter does."""
    if hasattr(tarfile, "data_filter"):
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            name = exc.tarinfo.name
            raise UnsafeArchiveError(f"refused to unpack {name!r} from a tar: {exc}") from None
    else:
        tar.extractall(dest, members=[data_member(m) for m in tar.getmembers()])


def data_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """A copy of `member` as the "data" filter would unpack it, or UnsafeArchiveError.

    Refused: a path with `..` (a leading `/` is dropped, as the filter does), a symbolic or
    hard link whose target is absolute or has `..` (so no link, nor a chain of them, leads out
    of a new folder), and anything but files, folders and links. The copy is owned by the
    unpacking user, without setuid/setgid/sticky or group/other write bits; a file stays
    readable and writable by its owner.
    """
    name = member.name.lstrip("/")
    if ".." in PurePosixPath(name).parts:
        raise UnsafeArchiveError(f"refused to unpack {member.name!r}: outside the folder")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        if target.is_absolute() or ".." in target.parts:
            raise UnsafeArchiveError(
                f"refused to unpack {member.name!r}: links to {member.linkname!r}, "
                "outside the folder"
            )
    elif not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(f"refused to unpack {member.name!r}: a device file or fifo")
    safe = copy.copy(member)
    safe.name = name
    safe.uid, safe.gid, safe.uname, safe.gname = os.geteuid(), os.getegid(), "", ""
    mode = member.mode & 0o755
    if member.isreg() or member.islnk():
        mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
    safe.mode = mode
    return safe

"""Unpacking tars: crafted malicious members are refused on every Python, safe ones unpack tamed.

`data_member` (the check used where tarfile lacks the "data" filter) is tested directly, so it is
tested on any Python; `extract_all` takes the filter or that check, whichever this Python has
(the compatibility matrix runs this file on Debian's 3.11.2, which lacks the filter).
"""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from labctl.jobs.safetar import UnsafeArchiveError, data_member, extract_all


def member(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


def archive(*members: tarfile.TarInfo) -> tarfile.TarFile:
    """An in-memory tar of `members`; a regular file holds b"data"."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in members:
            if info.isreg():
                info.size = 4
                tar.addfile(info, io.BytesIO(b"data"))
            else:
                tar.addfile(info)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


MALICIOUS = {
    "dot-dot": member("../evil"),
    "dot-dot inside": member("code/../../evil"),
    "absolute symlink": member("link", tarfile.SYMTYPE, "/etc"),
    "symlink out": member("code/link", tarfile.SYMTYPE, "../../outside"),
    "symlink via dot-dot": member("link", tarfile.SYMTYPE, "sub/../.."),
    "absolute hard link": member("hard", tarfile.LNKTYPE, "/etc/passwd"),
    "hard link out": member("hard", tarfile.LNKTYPE, "../outside"),
    "character device": member("tty", tarfile.CHRTYPE),
    "block device": member("disk", tarfile.BLKTYPE),
    "fifo": member("pipe", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("case", MALICIOUS)
def test_check_refuses_a_malicious_member(case: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=f"refused to unpack '{MALICIOUS[case].name}'"):
        data_member(MALICIOUS[case])


@pytest.mark.parametrize("case", MALICIOUS)
def test_extract_refuses_a_malicious_tar_and_writes_nothing_outside(
    case: str, tmp_path: Path
) -> None:
    top = tmp_path / "top"
    (top / "dest").mkdir(parents=True)
    (top / "outside").write_text("keep")
    with archive(member("code/ok.py"), MALICIOUS[case]) as tar, pytest.raises(UnsafeArchiveError):
        extract_all(tar, top / "dest")
    assert sorted(p.name for p in top.iterdir()) == ["dest", "outside"]
    assert (top / "outside").read_text() == "keep"


def test_check_tames_names_modes_and_owner() -> None:
    setuid = data_member(member("tool", mode=0o4777))
    assert setuid.mode == 0o755
    plain = data_member(member("notes", mode=0o666))
    assert plain.mode == 0o644
    unreadable = data_member(member("locked", mode=0o000))
    assert unreadable.mode == 0o600
    assert data_member(member("/rooted")).name == "rooted"
    folder = data_member(member("sub", tarfile.DIRTYPE, mode=0o1777))
    assert folder.mode == 0o755
    original = member("x")
    original.uid, original.uname = 4242, "mallory"
    assert (data_member(original).uname, original.uname) == ("", "mallory")  # a copy


def test_extract_unpacks_files_folders_and_inner_links(tmp_path: Path) -> None:
    members = (
        member("code", tarfile.DIRTYPE, mode=0o775),
        member("code/run.py", mode=0o4775),
        member("code/data.txt", mode=0o664),
        member("code/sub/deep.txt"),
        member("code/alias.txt", tarfile.SYMTYPE, "sub/deep.txt"),
        member("code/same.txt", tarfile.LNKTYPE, "code/data.txt"),
        member("/code/rooted.txt"),  # a leading / is dropped
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    with archive(*members) as tar:
        extract_all(tar, dest)
    code = dest / "code"
    assert (code / "rooted.txt").read_text() == "data"
    assert (code / "alias.txt").is_symlink() and (code / "alias.txt").read_text() == "data"
    assert (code / "same.txt").read_text() == "data"
    assert (code / "same.txt").stat().st_ino == (code / "data.txt").stat().st_ino
    assert stat.S_IMODE((code / "run.py").stat().st_mode) == 0o755
    assert stat.S_IMODE((code / "data.txt").stat().st_mode) == 0o644

"""Which version of `pipelines/` a job runs: the git commit, and whether the tree was dirty.

At submit time labctl records the commit of the repository holding `pipelines/`; a tree with
uncommitted changes is refused unless allowed, and then the hash of its changes is recorded. The
watchdog ships exactly that commit (`git archive`), or the working tree for an allowed dirty one.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labctl.compute.transport import LocalRunner
from labctl.errors import ValidationError
from labctl.jobs.safetar import extract_all


def git(repo: Path, *args: str) -> str:
    """git's text output in `repo`, or ValidationError with its first line of complaint."""
    done = LocalRunner().run(["git", "-C", str(repo), *args], check=False, timeout=300)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["git failed"])[0]
        raise ValidationError(f"git {args[0]} in {repo}: {first}")
    return done.stdout


def _git_bytes(repo: Path, scratch: Path, *args: str) -> bytes:
    """The bytes git writes with `--output=FILE` (an archive, a binary diff): the runner's
    output is text, and a binary diff must hash exactly."""
    fd, name = tempfile.mkstemp(prefix=".git-", dir=scratch)
    os.close(fd)
    try:
        git(repo, *args[:1], f"--output={name}", *args[1:])
        return Path(name).read_bytes()
    finally:
        os.unlink(name)


def code_version(pipelines: Path, *, allow_dirty: bool = False) -> dict[str, Any]:
    """`{"commit", "path", "dirty", "diff_sha256"}` for the pipelines folder, or an error."""
    if not pipelines.is_dir():
        raise ValidationError(f"the pipelines folder {pipelines} does not exist")
    top = Path(git(pipelines, "rev-parse", "--show-toplevel").strip())
    path = pipelines.resolve().relative_to(top.resolve()).as_posix()
    commit = git(top, "rev-parse", "HEAD").strip()
    changed = git(top, "status", "--porcelain", "--untracked-files=all", "--", path)
    dirty = bool(changed.strip())
    if dirty and not allow_dirty:
        count = len(changed.strip().splitlines())
        raise ValidationError(
            f"{path}/ has {count} uncommitted change(s): commit them so the results can be traced "
            "to a version, or submit with --allow-dirty"
        )
    return {
        "commit": commit,
        "path": path,
        "dirty": dirty,
        "diff_sha256": _changes_hash(top, path) if dirty else None,
    }


def shipped_commit(version: Mapping[str, Any]) -> str | None:
    """The commit a job's code is shipped from; None when it runs the working tree (a dirty
    tree it was allowed)."""
    return None if version["dirty"] else str(version["commit"])


def _changes_hash(top: Path, path: str) -> str:
    """A hash of what differs from the commit: the diff plus every untracked file's content."""
    with tempfile.TemporaryDirectory() as scratch:
        diff = _git_bytes(top, Path(scratch), "diff", "HEAD", "--binary", "--", path)
    digest = hashlib.sha256(diff)
    untracked = git(top, "ls-files", "--others", "--exclude-standard", "-z", "--", path)
    for name in sorted(filter(None, untracked.split("\0"))):
        digest.update(name.encode() + b"\0" + (top / name).read_bytes())
    return digest.hexdigest()


def export_commit(pipelines: Path, version: dict[str, Any], cache: Path) -> Path:
    """The pipelines folder as it is in the recorded commit, extracted once into `cache`."""
    target = cache / version["commit"]
    if not target.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        top = Path(git(pipelines, "rev-parse", "--show-toplevel").strip())
        archive = _git_bytes(
            top, cache, "archive", "--format=tar", version["commit"], "--", version["path"]
        )
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache))
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                extract_all(tar, partial)
        except BaseException:
            shutil.rmtree(partial)
            raise
        try:
            partial.rename(target)
        except OSError:  # another run extracted the same commit meanwhile
            shutil.rmtree(partial)
    folder: Path = target / str(version["path"])
    return folder

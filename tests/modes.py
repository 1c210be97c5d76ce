"""The permission bits of a tree, for the tests that keep secrets private."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def modes(root: Path) -> dict[str, int]:
    """Every directory and file under `root` (itself as "."): its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def private(root: Path) -> bool:
    """Whether every directory under `root` is 0700 and every file 0600."""
    return all(
        mode == (0o700 if (root / name).is_dir() else 0o600) for name, mode in modes(root).items()
    )

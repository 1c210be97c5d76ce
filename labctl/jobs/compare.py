"""Does a rerun reproduce its original? Each output's SHA-256 against the one the original
recorded; an HDF5 output whose bytes differ is compared dataset by dataset within a relative
tolerance, where both files are (the results brought home), so that the time stamps HDF5 keeps
in its metadata do not hide a real reproduction.

h5py and numpy come with the `pipelines` extra; without them an HDF5 file whose bytes differ
is `different`, saying why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labctl.clock import utcnow
from labctl.model.reproduction import FileComparison, Match, Reproduction, ResultFile

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ORDER = [Match.IDENTICAL, Match.EQUIVALENT, Match.DIFFERENT, Match.MISSING]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reproduction(
    original: str,
    rerun: str,
    expected: Sequence[ResultFile],
    got: Sequence[ResultFile],
    rtol: float,
    *,
    files: bool = True,
) -> Reproduction:
    """The verdict on every output either run has, environment reports aside (they record
    when and on which node a run ran, which a rerun changes by design); without `files`, from
    the recorded checksums alone."""
    before = {r.name: r for r in expected if not r.name.startswith("environment")}
    after = {r.name: r for r in got if not r.name.startswith("environment")}
    compare = _compare if files else lambda name, old, new, _: _by_checksum(name, old, new)
    found = [
        compare(name, before.get(name), after.get(name), rtol)
        for name in sorted(before.keys() | after.keys())
    ]
    return Reproduction(
        original=original, rerun=rerun, match=worst(found), files=found, at=utcnow()
    )


def worst(files: Sequence[FileComparison]) -> Match:
    return max((f.match for f in files), key=ORDER.index, default=Match.IDENTICAL)


def _compare(
    name: str, old: ResultFile | None, new: ResultFile | None, rtol: float
) -> FileComparison:
    found = _by_checksum(name, old, new)
    if found.match is not Match.DIFFERENT or old is None or new is None:
        return found
    match, note = _hdf5_match(Path(old.path), Path(new.path), rtol)
    return found.model_copy(update={"match": match, "note": note})


def _by_checksum(name: str, old: ResultFile | None, new: ResultFile | None) -> FileComparison:
    """What the recorded sizes and SHA-256 alone say of one output (bytes that differ:
    `different`, which only the files themselves can turn into `equal within tolerance`)."""
    sizes: dict[str, Any] = {
        "original_size": old.size if old else None,
        "rerun_size": new.size if new else None,
    }
    if old is None or new is None:
        note = "only the " + ("rerun" if old is None else "original") + " wrote it"
        return FileComparison(name=name, match=Match.MISSING, note=note, **sizes)
    match = Match.IDENTICAL if old.sha256 == new.sha256 else Match.DIFFERENT
    return FileComparison(name=name, match=match, **sizes)


def agrees(
    verdict: Reproduction, expected: Sequence[ResultFile], got: Sequence[ResultFile]
) -> bool:
    """Whether a verdict sent by a member's watchdog says what the recorded outputs of both
    runs say: the same files, their sizes, identical or missing exactly where the checksums say
    so, and the worst of them; only where the bytes differ may it say `equal within tolerance`
    (an HDF5 comparison of the files, which the store does not have)."""
    recorded = reproduction(verdict.original, verdict.rerun, expected, got, rtol=0.0, files=False)
    if [f.name for f in verdict.files] != [f.name for f in recorded.files]:
        return False
    for said, known in zip(verdict.files, recorded.files, strict=True):
        sizes = (said.original_size, said.rerun_size) == (known.original_size, known.rerun_size)
        allowed = {known.match} | ({Match.EQUIVALENT} if known.match is Match.DIFFERENT else set())
        if not sizes or said.match not in allowed:
            return False
    return verdict.match is worst(verdict.files)


def _is_hdf5(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def _hdf5_match(old: Path, new: Path, rtol: float) -> tuple[Match, str]:
    """Whether two HDF5 files hold the same datasets, equal within `rtol`; a file of another
    kind is simply different."""
    if not old.is_file():
        return Match.DIFFERENT, f"the original's file is no longer at {old}"
    if not (_is_hdf5(old) and _is_hdf5(new)):
        return Match.DIFFERENT, ""
    try:
        import h5py
        import numpy as np
    except ImportError:
        return Match.DIFFERENT, "h5py is not installed here to compare the datasets"
    try:
        with h5py.File(old, "r") as a, h5py.File(new, "r") as b:
            first = _first_difference(_datasets(a, h5py), _datasets(b, h5py), rtol, np)
    except (OSError, ValueError, TypeError) as exc:
        return Match.DIFFERENT, f"cannot compare the datasets: {exc}"
    if first:
        return Match.DIFFERENT, first
    return Match.EQUIVALENT, f"datasets equal within rtol {rtol:g}"


def _datasets(file: Any, h5py: Any) -> dict[str, Any]:
    """Every dataset's values by path (attributes, where time stamps live, are left out)."""
    found: dict[str, Any] = {}

    def take(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            found[name] = None if item.shape is None else item[()]

    file.visititems(take)
    return found


def _first_difference(a: dict[str, Any], b: dict[str, Any], rtol: float, np: Any) -> str:
    """The first dataset that differs, in words; "" if none does."""
    if a.keys() != b.keys():
        return "datasets differ: " + ", ".join(sorted(a.keys() ^ b.keys()))
    for name in sorted(a):
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape != y.shape:
            return f"dataset {name}: shape {x.shape} against {y.shape}"
        if np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number):
            equal = np.allclose(x, y, rtol=rtol, atol=0, equal_nan=True)
        else:
            equal = np.array_equal(x, y)
        if not equal:
            return f"dataset {name} differs beyond rtol {rtol:g}"
    return ""

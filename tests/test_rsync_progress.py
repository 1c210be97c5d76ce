"""Parsing rsync --info=progress2 output (captured from real runs) and building rsync argv."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from labctl.compute.transport import (
    Progress,
    SSHTarget,
    is_transient,
    parse_progress,
    private_dir,
    rsync_argv,
)

CAPTURED = Path(__file__).parent / "captured" / "rsync-progress2.raw"

# rsync 3.5.0 here, `rsync -a --info=progress2,stats1 --no-inc-recursive --bwlimit=3000 s/ d1/`
# over three 3 MB files and one small one: per-file records, the summary lines.
LOCAL_WITH_SUMMARY = (
    b"\r         32,768   0%    0.00kB/s    0:00:00  "
    b"\r      3,000,000  33%    2.95MB/s    0:00:00 (xfr#1, to-chk=3/5)"
    b"\r      3,294,912  36%    2.93MB/s    0:00:01  "
    b"\r      6,000,000  66%    2.97MB/s    0:00:01 (xfr#2, to-chk=2/5)"
    b"\r      6,557,056  72%    2.93MB/s    0:00:00  "
    b"\r      9,000,000  99%    2.98MB/s    0:00:02 (xfr#3, to-chk=1/5)"
    b"\r      9,000,003 100%    2.98MB/s    0:00:02 (xfr#4, to-chk=0/5)"
    b"\r      9,000,003 100%    2.98MB/s    0:00:02 (xfr#4, to-chk=0/5)\n"
    b"\nsent 9,002,468 bytes  received 95 bytes  2,572,160.86 bytes/sec\n"
    b"total size is 9,000,003  speedup is 1.00\n"
)
# `rsync -a --info=progress2 --bwlimit=200 t/ d4/`: kB/s rates.
LOCAL_KB = (
    b"\r         32,768   5%    0.00kB/s    0:00:00  "
    b"\r        262,144  43%  207.41kB/s    0:00:01  "
    b"\r        300,000  50%  210.46kB/s    0:00:01 (xfr#1, to-chk=2/5)"
    b"\r        496,608  82%  203.58kB/s    0:00:00  "
)
# A 1.5 GB local copy, read while rsync was writing its second record.
LOCAL_BIG = b"\r    318,013,440  21%  303.25MB/s    0:00:03  \r    610,107,392  40%  291.05MB/s"


def test_captured_file_over_ssh() -> None:
    progress = parse_progress(CAPTURED.read_bytes())
    assert progress == Progress(
        bytes_done=524_288_000,
        percent=100,
        rate="154.93MB/s",
        rate_bytes_per_s=154.93 * 1024**2,
        eta_seconds=3,
        xfr=5,
        to_check_remaining=0,
        to_check_total=6,
    )


def test_growing_captured_log_reports_each_complete_record() -> None:
    raw = CAPTURED.read_bytes()
    cut = raw.index(b"(xfr#2")  # inside the fourth record: it is not complete yet
    progress = parse_progress(raw[:cut])
    assert progress is not None
    assert (progress.bytes_done, progress.percent, progress.xfr) == (120_455_168, 22, None)
    assert progress.eta_seconds == 3


def test_str_input_is_parsed_like_bytes() -> None:
    raw = CAPTURED.read_bytes()
    assert parse_progress(raw.decode()) == parse_progress(raw)


def test_summary_lines_give_totals() -> None:
    progress = parse_progress(LOCAL_WITH_SUMMARY)
    assert progress is not None
    assert (progress.bytes_done, progress.percent) == (9_000_003, 100)
    assert (progress.xfr, progress.to_check_remaining, progress.to_check_total) == (4, 0, 5)
    assert progress.total_bytes == 9_000_003
    assert (progress.bytes_sent, progress.bytes_received) == (9_002_468, 95)


def test_kilobyte_rates_are_binary_units() -> None:
    progress = parse_progress(LOCAL_KB)
    assert progress is not None
    # The last record has no \r after it yet, but it is complete: it ends with two spaces.
    assert progress.bytes_done == 496_608
    assert progress.rate == "203.58kB/s"
    assert progress.rate_bytes_per_s == pytest.approx(203.58 * 1024)


def test_partial_last_record_is_ignored() -> None:
    progress = parse_progress(LOCAL_BIG)
    assert progress is not None
    assert (progress.bytes_done, progress.eta_seconds, progress.total_bytes) == (
        318_013_440,
        3,
        None,
    )


def test_every_prefix_of_the_captured_log_gives_a_whole_record() -> None:
    """Cut anywhere (as a reader of a growing log may), the last whole record is reported."""
    raw = CAPTURED.read_bytes()
    records = [m for m in re.finditer(rb"[^\r\n]+", raw) if parse_progress(m[0] + b"\r")]
    for cut in range(len(raw) + 1):
        inside = [m for m in records if m.end() <= cut]
        expected = parse_progress(inside[-1][0] + b"\r") if inside else None
        assert parse_progress(raw[:cut]) == expected, cut


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Forms from rsync's progress.c (%4d:%02d:%02d, "??:??:??", GB/s, ir-chk).
        (
            "  1,234,567,890  12%    1.25GB/s  123:04:05  ",
            (1_234_567_890, 1.25 * 1024**3, 123 * 3600 + 4 * 60 + 5, None),
        ),
        ("         32,768   0%    0.00kB/s  ??:??:??  ", (32_768, 0.0, None, None)),
        (
            "     1,000   1%    9.50MB/s    0:00:00 (xfr#7, ir-chk=1000/2000)",
            (1_000, 9.5 * 1024**2, 0, 7),
        ),
    ],
)
def test_other_record_forms(line: str, expected: tuple[int, float, int | None, int | None]) -> None:
    progress = parse_progress(f"\r{line}\r")
    assert progress is not None
    got = (progress.bytes_done, progress.rate_bytes_per_s, progress.eta_seconds, progress.xfr)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        "",
        b"\r",
        b"\r\n\n",
        b"\x00\xff\xfe garbage \r\n",
        b'rsync: [sender] link_stat "/x" failed: No such file or directory (2)\n',
        b"sent 55 bytes  received 12 bytes  134.00 bytes/sec\ntotal size is 5  speedup is 0.1\n",
        b"    120,455,168  22%  114.84MB/s",  # a first record still being written
        b"    abc  22%  114.84MB/s    0:00:03  \r",
    ],
)
def test_nothing_to_report(raw: bytes | str) -> None:
    assert parse_progress(raw) is None


def test_real_local_run(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b c", "d:e"):  # a colon would make rsync think of host:path
        (src / name).write_bytes(b"x" * 100_000)
    argv = rsync_argv(["src/"], "dst", target=None)
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, check=True)
    progress = parse_progress(done.stdout)
    assert progress is not None
    assert (progress.bytes_done, progress.percent, progress.total_bytes) == (300_000, 100, 300_000)
    assert (progress.xfr, progress.to_check_remaining, progress.to_check_total) == (3, 0, 4)
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["a", "b c", "d:e"]


@pytest.fixture
def target(tmp_path: Path) -> SSHTarget:
    return SSHTarget(
        name="hpc",
        host="hpc.example.org",
        directory=str(private_dir(tmp_path / "s")),
        user="lab",
        key_file="/keys/id ed25519",
        known_hosts="/k/known'hosts",
        port=2222,
    )


def test_push_argv(target: SSHTarget) -> None:
    argv = rsync_argv(["data/run 1", "/abs/x"], "in/$(boom)", target=target)
    assert argv[:6] == [
        "rsync",
        "-a",
        "-s",
        "--partial",
        "--info=progress2,stats1",
        "--no-inc-recursive",
    ]
    ssh = shlex.split(argv[argv.index("-e") + 1])
    assert ssh[:2] == ["ssh", "-F"]
    config = Path(ssh[2]).read_text()  # where the cluster is: the generated ssh config
    assert 'IdentityFile "/keys/id ed25519"' in config and "Port 2222" in config
    assert 'UserKnownHostsFile "/k/known\'hosts"' in config
    assert {"ControlMaster=no", "BatchMode=yes"} <= set(ssh)
    assert f"ControlPath={target.control_path}" in ssh  # rides the cluster's session
    assert argv[-3:] == ["./data/run 1", "/abs/x", "hpc:in/$(boom)"]


def test_pull_argv_with_files_from_and_bwlimit(target: SSHTarget) -> None:
    argv = rsync_argv(
        ["/scratch/out/"],
        "results",
        target=target,
        direction="pull",
        files_from="list.txt",
        bwlimit_kib=5000,
    )
    assert argv[argv.index("--files-from=./list.txt") + 1] == "--from0"
    assert "--bwlimit=5000" in argv
    assert argv[-2:] == ["hpc:/scratch/out/", "./results"]


def test_argv_needs_a_source() -> None:
    with pytest.raises(ValueError, match="at least one source"):
        rsync_argv([], "dst")


HOST_KEY_LOG = (
    "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\n"
    "Host key verification failed.\n"
    "rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n"
)
AUTH_LOG = "hpcuser@127.0.0.1: Permission denied (publickey).\n"
REFUSED_LOG = "ssh: connect to host 127.0.0.1 port 2223: Connection refused\n"


@pytest.mark.parametrize(
    ("code", "log", "transient"),
    [
        (255, REFUSED_LOG, True),
        (255, HOST_KEY_LOG, False),
        (255, AUTH_LOG, False),
        (255, 'rsync: [receiver] mkstemp "/x" failed: Permission denied (13)\n', True),
        (12, "", True),
        (30, "", True),
        (137, "", True),  # killed by SIGKILL, seen through the launcher's shell
        (23, "", False),
        (1, "", False),
        (11, "", False),
        (127, "", False),  # the launcher's shell found no rsync
        (99, "", False),
    ],
)
def test_exit_code_classification(code: int, log: str, transient: bool) -> None:
    assert is_transient(code, log) is transient

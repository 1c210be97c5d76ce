"""`labctl doctor`: small checks of an installation, each returning a `Check` with a fix hint."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.access.lab import Lab, LocalLab
from labctl.compute.cluster import open_cluster
from labctl.compute.mount import mount_spec, mounted_type
from labctl.compute.transport import (
    AuthError,
    HostKeyError,
    LocalRunner,
    Runner,
    SessionDownError,
    Sessions,
    SSHTarget,
    TransportError,
)
from labctl.config import ClusterConfig, Config, DatabaseConfig, load_config
from labctl.damaged import Damaged
from labctl.db import Database, connect
from labctl.errors import ConfigError, LabctlError
from labctl.install.cron import CronSpec, installed_block
from labctl.install.leftovers import Leftovers, find_leftovers
from labctl.install.onboarding import config_file
from labctl.install.waiting import HEARTBEAT_MAX_AGE, stale_after
from labctl.settings import ServiceConfig

CRON_PATH = "/usr/bin:/bin"  # the PATH cron gives a crontab line that sets none
CRON_STAGES = ("scan", "transfers", "jobs")  # one line, lock and log each in crontab.template


@dataclass(frozen=True)
class Check:
    """One verdict: what was checked, whether it is fine, what was seen, and how to fix it."""

    name: str
    ok: bool
    detail: str
    hint: str = ""


def check_config(path: Path | None) -> tuple[Check, Config | None]:
    """The config loads and validates."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return Check("config", False, str(exc), "fix the file, or rerun 'labctl setup'"), None
    return Check("config", True, f"{len(config.clusters)} cluster(s)"), config


def _describe_server(hello: Mapping[str, Any]) -> str:
    """A MongoDB server's `hello` reply in words. The driver has already refused a server of
    another replica set, and one without a primary (labctl reads and writes the primary)."""
    name = hello.get("setName")
    if name is None:
        return "standalone server (no replica set)"
    members = len(hello.get("hosts", []))
    return f"replica set {name}, primary {hello.get('primary')}, {members} member(s)"


def check_service(service: ServiceConfig) -> tuple[Check, Lab | None]:
    """The service answers and takes the token (which the watchdog uses too)."""
    from labctl.access.service import ServiceLab

    try:
        lab = ServiceLab.of(service)
        me = lab.whoami()
    except LabctlError as exc:
        hint = f"check service.url and the network; 'labctl login {service.url}' for a new token"
        return Check("service", False, str(exc), hint), None
    return Check("service", True, f"{lab.where}, as {me.username}"), lab


def check_database(config: DatabaseConfig) -> tuple[Check, Database | None]:
    """The database opens; on MongoDB, its replica set has a primary."""
    try:
        db = connect(config)
        hello = db.hello()
    except LabctlError as exc:
        hint = "check database.uri, the network/VPN and LABCTL_DB_PASSWORD"
        return Check("database", False, str(exc), hint), None
    if hello is None:
        return Check("database", True, db.where), db
    return Check("database", True, f"{db.where}: {_describe_server(hello)}"), db


def check_heartbeat(
    beats: Sequence[Mapping[str, Any]], now: dt.datetime, max_age: dt.timedelta = HEARTBEAT_MAX_AGE
) -> Check:
    """Every stage of the watchdog in `beats` that ever ran has run within `max_age` (on any
    host); doctor gives it the heartbeats of its member's watchdog."""
    hint = "is the crontab block installed ('labctl cron show') and cron running? see its logs"
    newest: dict[str, dt.datetime] = {}
    for beat in beats:
        stage = str(beat["stage"])
        newest[stage] = max(beat["at"], newest.get(stage, beat["at"]))
    if not newest:
        return Check("watchdog heartbeat", False, "the watchdog has never run", hint)
    ages = {stage: now - at for stage, at in sorted(newest.items())}
    detail = ", ".join(f"{stage} {int(age.total_seconds())} s ago" for stage, age in ages.items())
    stale = [stage for stage, age in ages.items() if age > max_age]
    if stale:
        limit = int(max_age.total_seconds() // 60)
        return Check("watchdog heartbeat", False, f"older than {limit} min: {detail}", hint)
    return Check("watchdog heartbeat", True, detail)


def check_damaged(record: Damaged) -> Check:
    """A stored record that does not validate, which every listing shows as damaged."""
    if record.kind == "job":
        hint = "correct or delete its document in the store (queue or archive)"
    else:
        hint = "the watchdog rewrites it on its next run; or delete its record from meta"
    return Check(f"damaged {record.kind} {record.id}", False, record.problem, hint)


def check_crontab(runner: Runner, spec: CronSpec) -> Check:
    """labctl's block is in the crontab, exactly as `labctl cron install` would write it now."""
    try:
        found = installed_block(runner)
        wanted = spec.block()
    except LabctlError as exc:
        return Check("crontab", False, str(exc), "install cron and util-linux (flock)")
    if found is None:
        fix = "run 'labctl cron install'"
        if not spec.config_path.is_file():  # cron install would send them to setup first
            fix = f"run 'labctl setup': it writes {spec.config_path} and installs the block"
        return Check("crontab", False, "no labctl block in the crontab", fix)
    if found != wanted:
        return Check(
            "crontab", False, "the labctl block differs from what this labctl would install",
            "run 'labctl cron install' (with the labctl and --config the watchdog should use)",
        )  # fmt: skip
    return Check("crontab", True, f"block installed, runs {spec.python}")


def check_local_rsync(path: str | None = None, cron_path: str = CRON_PATH) -> Check:
    """rsync is on `path` (this shell's PATH by default) and on cron's PATH, which the watchdog's
    crontab lines run with."""
    found = shutil.which("rsync", path=path)
    if found is None:
        return Check("rsync (local)", False, "rsync is not on PATH", "apt install rsync")
    if shutil.which("rsync", path=cron_path) is None:
        return Check(
            "rsync (local)", False, f"{found} is not on cron's PATH ({cron_path})",
            f"apt install rsync, or put 'PATH={cron_path}:{Path(found).parent}' above the "
            "labctl block with 'crontab -e'",
        )  # fmt: skip
    return Check("rsync (local)", True, found)


def check_pipelines(config: Config) -> Check:
    """The pipelines checkout that jobs ship: configured, or the one labctl runs from."""
    try:
        found = config.watchdog.pipelines
    except ConfigError as exc:
        hint = (
            "set watchdog.pipelines_dir in the config to a clone of the lab's repository's "
            "pipelines/, or install labctl from that clone with its install.py"
        )
        return Check("pipelines", False, str(exc), hint)
    if not found.is_dir():
        return Check("pipelines", False, f"{found} does not exist", "fix watchdog.pipelines_dir")
    return Check("pipelines", True, str(found))


def _last_entry(log: Path) -> str:
    """The last unindented line of a stage's log without its time stamp (a stage's summary,
    or the last line of what went wrong)."""
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - 8192))
        lines = handle.read().decode(errors="replace").splitlines()
    entries = [line.partition(" ")[2] for line in lines if not line.partition(" ")[2][:1].isspace()]
    return entries[-1] if entries else ""


def _stage_log_problem(log_dir: Path, stage: str, limit: dt.timedelta, now: dt.datetime) -> str:
    """What is wrong with one stage's cron log, or "" if its last run is recent and fine."""
    log, lock = log_dir / f"{stage}.log", log_dir / f"{stage}.lock"

    def age(path: Path) -> dt.timedelta:
        return now - dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)

    if not log.exists():
        if lock.exists():
            return f"{stage}: cron ran its line but it wrote no log"
        if not log_dir.exists() or age(log_dir) > limit:
            return f"{stage}: cron has never run its line"
        return ""  # installed a moment ago: cron's first run is still to come
    if age(log) > limit:
        return f"{stage}: last log {int(age(log).total_seconds() // 60)} min ago"
    last = _last_entry(log)
    return "" if last.startswith(f"{stage}: ") else f"{stage}: its last run ended with '{last}'"


def check_watchdog_logs(
    log_dir: Path, cron_minutes: int, now: dt.datetime, stages: Sequence[str] = CRON_STAGES
) -> Check:
    """Each crontab line wrote its stage's log lately, and its last run ended with the stage's
    summary: a line that fails (MAILTO is empty, so cron mails nothing) shows up here."""
    limit = stale_after(cron_minutes)
    problems = [p for stage in stages if (p := _stage_log_problem(log_dir, stage, limit, now))]
    if problems:
        hint = (
            "run one line of 'labctl cron show' by hand from your home (sh -c '...') to see its "
            "error; is cron running?"
        )
        return Check("watchdog logs", False, "; ".join(problems), hint)
    return Check("watchdog logs", True, f"recent and fine in {log_dir}")


def check_host_key(name: str, config: ClusterConfig) -> Check:
    """known_hosts has an entry for the cluster (a changed key shows up at login)."""
    assert config.host is not None  # an ssh cluster without ssh_alias
    entry = config.host if config.port == 22 else f"[{config.host}]:{config.port}"
    found = LocalRunner().run(
        ["ssh-keygen", "-F", entry, "-f", str(config.known_hosts)], check=False, timeout=30
    )
    if found.returncode == 0 and found.stdout.strip():
        return Check(f"{name}: host key", True, f"{entry} in {config.known_hosts}")
    return Check(
        f"{name}: host key", False, f"{entry} is not in {config.known_hosts}",
        f"compare the cluster's published fingerprint with 'ssh-keyscan -p {config.port} "
        f"{config.host}', then append that line to {config.known_hosts}",
    )  # fmt: skip


def _login_hint(exc: TransportError, target: SSHTarget) -> str:
    if isinstance(exc, SessionDownError):
        return f"labctl connect {target.name}"
    if isinstance(exc, HostKeyError):
        return f"verify the host key and update {target.known_hosts or '~/.ssh/known_hosts'}"
    if isinstance(exc, AuthError) and target.auth == "key":
        return (
            f"add the line in {target.key_file}.pub to ~/.ssh/authorized_keys of "
            f"{target.user} on {target.host} ('labctl setup' prints it)"
        )
    return "check host, port and gateways in the config, and the network/VPN"


def check_session(target: SSHTarget) -> Check:
    """The cluster's session: up until when, or the command that opens it."""
    what = f"{target.name}: session"
    try:
        session = Sessions().status(target)
    except TransportError as exc:
        return Check(what, False, str(exc), "check the session directory")
    via = f" via {target.via}" if target.via else ""
    if session.up:
        until = f"{session.until:%Y-%m-%d %H:%M} UTC" if session.until else "?"
        return Check(what, True, f"up{via} until {until}")
    if target.auth == "key":
        return Check(what, True, f"down ({session.detail}); the watchdog opens it with the key")
    return Check(what, False, f"down{via} ({session.detail})", f"labctl connect {target.name}")


def _script_check(runner: Runner, name: str, script: str, hint: str, *args: str) -> Check:
    """Run a small POSIX sh script (arguments in $1...) on the cluster; it passes if it exits 0."""
    try:
        done = runner.run(["sh", "-c", script, "sh", *args], check=False, timeout=30)
    except TransportError as exc:
        return Check(name, False, str(exc), hint)
    text = " ".join((done.stdout + done.stderr).split())
    ok = done.returncode == 0
    return Check(name, ok, text or f"exit {done.returncode}", "" if ok else hint)


def _tools_check(runner: Runner, name: str, tools: Sequence[str], hint: str) -> Check:
    """The tools are on the PATH of the cluster's non-interactive shell."""
    script = 'for t; do command -v "$t" || { echo "$t: not found on PATH"; exit 1; }; done'
    return _script_check(runner, name, script, hint, *tools)


def check_cluster(name: str, config: ClusterConfig) -> Iterator[Check]:
    """Login, tools and scratch of one cluster, over one connection."""
    if config.type == "ssh" and config.host is not None:
        yield check_host_key(name, config)
    cluster = open_cluster(name, config)
    try:
        if cluster.target is not None:
            target = cluster.target
            session = check_session(target)
            yield session
            if not session.ok:
                return
            where = target.where
            try:
                cluster.runner.run(["true"], timeout=30)
            except TransportError as exc:
                yield Check(f"{name}: ssh login", False, str(exc), _login_hint(exc, target))
                return
            how = target.key_file if target.auth == "key" else "the session"
            yield Check(f"{name}: ssh login", True, f"{where} with {how}")
        if config.scheduler == "slurm":
            yield _tools_check(
                cluster.runner, f"{name}: sbatch/squeue", ["sbatch", "squeue"],
                "install the SLURM client or add its module to the login shell's PATH",
            )  # fmt: skip
        yield _script_check(
            cluster.runner, f"{name}: scratch writable",
            'mkdir -p -- "$1" && f=$(mktemp -- "$1/.labctl-doctor.XXXXXX") && rm -f -- "$f" '
            '&& echo "$1"',
            f"create {config.scratch} on the cluster, writable by {config.user or 'you'}",
            config.scratch,
        )  # fmt: skip
        yield _tools_check(
            cluster.runner, f"{name}: rsync", ["rsync"],
            "ask the cluster admins for rsync, or add its module to the login shell's PATH",
        )  # fmt: skip
    finally:
        cluster.close()


def check_mount(name: str, config: ClusterConfig) -> Check:
    """The cluster's sshfs mount is there and answers within 10 s."""
    spec = mount_spec(name, config)
    what = f"{name}: mount"
    kind = mounted_type(spec.mount_point)
    if kind is None:
        return Check(what, False, f"nothing mounted at {spec.mount_point}", f"labctl mount {name}")
    try:
        LocalRunner().run(["ls", "--", str(spec.mount_point)], timeout=10)
    except TransportError as exc:
        hint = f"labctl umount {name} && labctl mount {name}"
        return Check(what, False, f"{kind} at {spec.mount_point} is dead: {exc}", hint)
    return Check(what, True, f"{spec.source} at {spec.mount_point} ({kind})")


def check_leftovers(left: Leftovers) -> Check:
    """What finished jobs left behind in one place (`labctl.install.leftovers`)."""
    what = left.name
    if left.error:
        return Check(what, False, left.error, "look again when the cluster answers")
    if not left.paths:
        return Check(what, True, "none")
    shown = ", ".join(left.paths[:3]) + (", ..." if len(left.paths) > 3 else "")
    found = f"{len(left.paths)} of finished jobs or killed pulls: {shown}"
    if left.cleaned:
        return Check(what, True, f"removed {found}")
    return Check(what, False, found, f"labctl doctor --clean, or {left.remove}")


def run_checks(
    config_path: Path | None,
    cron: CronSpec | None = None,
    now: dt.datetime | None = None,
    *,
    clean: bool = False,
) -> Iterator[Check]:
    """Every check in order; those that need a valid config are left out without one, and the
    heartbeat and leftovers without a database. `cron` defaults to this labctl's block for the
    config in use; `clean` removes the leftovers found."""
    check, config = check_config(config_path)
    yield check
    if config is None:
        return
    if config.service is not None:
        db_check, lab = check_service(config.service)
        db = None
    else:
        db_check, db = check_database(config.database)
        lab = None if db is None else LocalLab(config, db)
    yield db_check
    try:
        yield check_local_rsync()
        for name, cluster in config.clusters.items():
            yield from check_cluster(name, cluster)
            if cluster.mount_point is not None:
                yield check_mount(name, cluster)
        yield check_pipelines(config)
        crontab = check_crontab(LocalRunner(), cron or CronSpec(config, config_file(config_path)))
        yield crontab
        now = now or dt.datetime.now(dt.UTC)
        minutes = config.watchdog.cron_minutes
        if crontab.ok:
            yield check_watchdog_logs(config.watchdog.log_dir, minutes, now)
        if lab is not None:
            me = lab.whoami().username
            watchdog = lab.heartbeats()
            mine = [beat for beat in watchdog.heartbeats if beat.get("user") == me]
            yield check_heartbeat(mine, now, stale_after(minutes))
            jobs = lab.jobs()
            yield from map(check_damaged, [*jobs.damaged, *watchdog.damaged])
            yield from map(check_leftovers, find_leftovers(config, lab, jobs, now, clean))
    finally:
        if db is not None:
            db.close()

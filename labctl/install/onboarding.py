"""`labctl setup`: merge a lab member's answers into their config, check it, write it safely.

The file is only replaced once the new settings load as a `Config` and, unless told otherwise,
every cluster accepts the SSH key and the database answers. It is written to a temporary file
with mode 0600 and renamed over the old one, so a password in it is never readable by others and
a failure at any step leaves the old file (or none) in place.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from labctl.compute.cluster import open_cluster
from labctl.compute.transport import LocalRunner, TransportError
from labctl.config import (
    EMBEDDED,
    Config,
    DatabaseConfig,
    RawSettings,
    WatchdogConfig,
    _read_yaml,
    _with_password,
    default_config_path,
    load_config,
)
from labctl.db import connect
from labctl.errors import ConfigError, LabctlError


class SetupError(LabctlError):
    """A cluster or the database refused the new settings, or a key could not be made."""


@dataclass(frozen=True)
class ClusterAnswer:
    """What a lab member says about one cluster."""

    user: str | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class Answers:
    """Everything setup asks; None keeps what the config has."""

    user: str | None = None
    email: str | None = None
    db_uri: str | None = None
    db_password: str | None = None
    clusters: Mapping[str, ClusterAnswer] = field(default_factory=dict)
    smtp_password: str | None = None


def config_file(explicit: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """The file labctl reads (and setup writes): --config, then $LABCTL_CONFIG, then the default."""
    env = os.environ if env is None else env
    if explicit is not None:
        return explicit.absolute()
    if env.get("LABCTL_CONFIG"):
        return Path(env["LABCTL_CONFIG"]).absolute()
    return default_config_path()


def read_settings(path: Path | None) -> RawSettings:
    """The settings a YAML file holds as they are written (no defaults), {} if there is none."""
    return _read_yaml(path) if path is not None and path.exists() else {}


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> RawSettings:
    """`base` with `over` laid on top, mapping by mapping."""
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = merge(old, value)
        else:
            merged[key] = value
    return merged


def require_clusters(known: Iterable[str], names: Iterable[str]) -> None:
    """ConfigError naming the first of `names` that is not a configured cluster."""
    unknown = sorted(set(names) - set(known))
    if unknown:
        listed = ", ".join(sorted(known)) or "none; pass --lab-config with the lab's clusters"
        raise ConfigError(f"unknown cluster {unknown[0]!r} (configured: {listed})")


def apply(settings: RawSettings, answers: Answers) -> RawSettings:
    """The settings with the answers filled in; an answer for an unknown cluster is an error."""
    require_clusters(settings.get("clusters") or {}, answers.clusters)
    top = {"user": answers.user, "email": answers.email}
    new: RawSettings = {k: v for k, v in top.items() if v is not None}
    uri = answers.db_uri or (settings.get("database") or {}).get("uri")
    if answers.db_password:
        if not uri or uri == EMBEDDED or not urlsplit(uri).username:
            raise ConfigError("a database password needs a URI with a user: mongodb://USER@HOST/")
        uri = _with_password(uri, answers.db_password)
    if uri and uri != (settings.get("database") or {}).get("uri"):
        new["database"] = {"uri": uri}
    if answers.smtp_password:
        if not (settings.get("notify") or {}).get("smtp"):
            raise ConfigError(
                "an SMTP password needs the lab's notify.smtp settings (--lab-config)"
            )
        new["notify"] = {"smtp": {"password": answers.smtp_password}}
    for name, answer in answers.clusters.items():
        given = {"user": answer.user, "key_file": answer.key_file and str(answer.key_file)}
        new.setdefault("clusters", {})[name] = {k: v for k, v in given.items() if v is not None}
    return merge(_pinned_paths(), merge(settings, new))


def _pinned_paths() -> RawSettings:
    """The default local directories, written out: cron has neither the XDG variables of your
    shell nor, maybe, the same HOME, and must use the same store and state as you."""
    watchdog = WatchdogConfig()
    return {
        "database": {"path": str(DatabaseConfig().path)},
        "watchdog": {"state_dir": str(watchdog.state_dir), "log_dir": str(watchdog.log_dir)},
    }


def check_writable(path: Path) -> None:
    """ConfigError unless `path` could be created: its nearest existing ancestor is a writable
    directory."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {path}: {parent} is not a writable directory")


def create_key(path: Path, comment: str) -> None:
    """Make an ed25519 key pair without passphrase (cron must use it unattended)."""
    if path.exists():
        raise SetupError(f"{path} exists already: not overwriting a key")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    done = LocalRunner().run(argv, check=False, timeout=60)
    if done.returncode != 0:
        raise SetupError(f"ssh-keygen could not make {path}: {done.stderr.strip() or 'no message'}")


def key_comment(user: str) -> str:
    return f"labctl {user}@{socket.gethostname()}"


def authorized_keys_line(key_file: Path) -> str:
    """The line to add to ~/.ssh/authorized_keys on a cluster for this private key."""
    public = key_file.with_name(key_file.name + ".pub")
    try:
        return public.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SetupError(f"cannot read the public key {public}: {exc.strerror}") from None


def verify(config: Config, clusters: Iterable[str], database: bool) -> None:
    """Log in to each named cluster and (if asked) reach the database, or the service with the
    member's token; raise naming what failed."""
    for name in clusters:
        cluster = open_cluster(name, config.clusters[name])
        try:
            cluster.runner.run(["true"], timeout=30)
        except TransportError as exc:
            raise SetupError(f"cluster {name}: {exc}") from None
        finally:
            cluster.close()
    if database and config.service is not None:
        from labctl.access.service import ServiceLab

        ServiceLab.of(config.service).whoami()
    elif database and not config.database.embedded:
        connect(config.database).close()


def _make_dirs(directory: Path) -> list[Path]:
    """mkdir -p with mode 0700; the directories it created, deepest first."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for made in reversed(missing):
        try:
            made.mkdir(mode=0o700)
        except OSError as exc:
            _remove_dirs(missing)
            raise ConfigError(f"cannot create {made}: {exc.strerror}") from None
    return missing


def _remove_dirs(created: list[Path]) -> None:
    for directory in created:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def _replace(path: Path, text: str, check: Callable[[Path], None]) -> None:
    """Write `text` to a 0600 temporary file beside `path`, `check` it, rename it over `path`."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    except OSError as exc:
        raise ConfigError(f"cannot write to {path.parent}: {exc.strerror}") from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        check(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_config(
    path: Path,
    settings: RawSettings,
    verify_clusters: Iterable[str] = (),
    verify_database: bool = False,
    then: Callable[[Config], None] | None = None,
) -> Config:
    """Replace the config at `path` with `settings` if they load, the named clusters accept the
    login and (if asked) the database answers; then run `then` (e.g. install the crontab). On
    any failure the old file (or none, and no new directory) is left."""
    text = yaml.safe_dump(dict(settings), sort_keys=False, allow_unicode=True)
    previous = path.read_text(encoding="utf-8") if path.is_file() else None
    loaded: list[Config] = []

    def check(tmp: Path) -> None:
        try:
            config = load_config(tmp)
        except ConfigError as exc:
            raise ConfigError(f"{path} not written: {str(exc).removeprefix(f'{tmp}: ')}") from None
        verify(config, verify_clusters, verify_database)
        loaded.append(config)

    created = _make_dirs(path.parent)
    try:
        _replace(path, text, check)
        if then is not None:
            then(loaded[0])
    except BaseException:
        if loaded and previous is None:
            path.unlink(missing_ok=True)
        elif loaded and previous is not None:
            _replace(path, previous, lambda tmp: None)
        _remove_dirs(created)
        raise
    return loaded[0]

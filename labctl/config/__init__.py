"""Settings: read once from an explicit path, validated into frozen typed models.

Lookup order: `--config PATH`, then `$LABCTL_CONFIG`, then `$XDG_CONFIG_HOME/labctl/config.yaml`
(`~/.config/labctl/config.yaml`), else built-in defaults: the embedded store under
`$XDG_DATA_HOME/labctl` (`~/.local/share/labctl`) and the `local` cluster. Secrets may come from
the environment: `LABCTL_DB_URI` replaces `database.uri`, `LABCTL_DB_PASSWORD` fills in the URI's
password, `LABCTL_SMTP_PASSWORD` the mail server's; a config file holding one must be 0600.
"""

from __future__ import annotations

import getpass
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import yaml
from pydantic import Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from labctl.config.jobtypes import JobTypeConfig, Resources
from labctl.config.notifyconfig import NotifyConfig
from labctl.config.policy import SchedulerPolicy
from labctl.config.webconfig import WebConfig
from labctl.config.yamlfile import BoundedLoader
from labctl.errors import ConfigError, ValidationError, redact
from labctl.settings import ServiceConfig, Settings, describe, xdg

FieldType = Literal["str", "int", "float", "bool", "datetime", "date", "list", "path"]
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
EMBEDDED = "embedded"
SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./-]*$")


def default_config_path() -> Path:
    return xdg("XDG_CONFIG_HOME", ".config") / "labctl" / "config.yaml"


def default_data_dir() -> Path:
    return xdg("XDG_DATA_HOME", ".local/share") / "labctl"


class DatabaseConfig(Settings):
    """Where the documents live: `embedded` (no server) or a MongoDB URI."""

    uri: str = EMBEDDED
    path: Path = Field(default_factory=lambda: default_data_dir() / "db")
    name: str = "labctl"
    timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    query_seconds: float = Field(default=10.0, gt=0, le=3600)  # then MongoDB stops a query

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        if uri != EMBEDDED and not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"must be '{EMBEDDED}' or a mongodb:// URI, not {redact(uri)!r}")
        try:
            urlsplit(uri)
        except ValueError as exc:  # "Invalid IPv6 URL": a [ without its ]
            raise ValueError(f"not a valid URI ({exc}): {redact(uri)!r}") from None
        return uri

    @field_validator("path")
    @classmethod
    def _expand(cls, path: Path) -> Path:
        return path.expanduser()

    @property
    def embedded(self) -> bool:
        return self.uri == EMBEDDED


class FieldSpec(Settings):
    """One typed field of a `data` entry."""

    type: FieldType = "str"
    required: bool = False
    help: str = ""


def _default_fields() -> dict[str, FieldSpec]:
    return {
        "user": FieldSpec(type="str", required=True, help="lab member who acquired the data"),
        "data_raw_path": FieldSpec(type="path", required=True, help="where the raw data lie"),
    }


class DataSchema(Settings):
    """The `data` collection's typed fields; any other field is free and typed by YAML."""

    fields: dict[str, FieldSpec] = Field(default_factory=_default_fields)
    raw_path_field: str = Field(default="data_raw_path", pattern=FIELD_NAME.pattern)
    processed_path_field: str = Field(
        default="data_path",
        pattern=FIELD_NAME.pattern,
        description="processed data and results; the raw path when an entry has none",
    )
    complete_field: str = Field(
        default="data_complete",
        pattern=FIELD_NAME.pattern,
        description="true once acquisition copied everything (for data_transfer_await)",
    )
    owner_field: str = Field(
        default="user",
        pattern=FIELD_NAME.pattern,
        description="whose experiment it is: they (or an admin) may change where its data lie",
    )

    @field_validator("fields")
    @classmethod
    def _valid_names(cls, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for name in fields:
            if not FIELD_NAME.fullmatch(name):
                raise ValueError(f"field name {name!r} must be dotted identifiers like runclass.id")
        return fields

    @property
    def required(self) -> list[str]:
        return [name for name, spec in self.fields.items() if spec.required]


CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,23}$")
HOST = r"^[A-Za-z0-9_.-]+$|^\[?[0-9A-Fa-f:.]+\]?$"
HOP = r"^([A-Za-z0-9_.-]+@)?([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$"


class ClusterConfig(SchedulerPolicy):
    """A compute cluster: reached over SSH (`ssh`) or this machine itself (`local`)."""

    type: Literal["ssh", "local"] = "ssh"
    host: str | None = Field(default=None, pattern=HOST)
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    ssh_alias: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="a Host of your ssh config, instead of host/port/user/proxy_jump",
    )
    ssh_config: Path = Field(
        default_factory=lambda: Path.home() / ".ssh" / "config",
        description="the ssh config file that ssh_alias is read from",
    )
    auth: Literal["key", "interactive"] = Field(
        default="key",
        description="key: the watchdog opens the session itself; interactive: password + "
        "one-time password, typed at `labctl connect`",
    )
    proxy_jump: list[str] = Field(
        default_factory=list, description="gateways on the way, each [user@]host[:port]"
    )
    session_hours: float = Field(
        default=168, gt=0, le=24 * 31, description="a session is closed after this long"
    )
    key_file: Path | None = None
    known_hosts: Path = Field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    scratch: str = Field(description="absolute directory on the cluster for job folders")
    scheduler: Literal["slurm", "process"] = Field(
        default="slurm", description="slurm, or plain background processes (local only)"
    )
    account: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    setup: list[str] = Field(default_factory=list, description="shell lines run before a job")
    python: str = "python3"
    resources: Resources = Field(default_factory=lambda: Resources(time="01:00:00", cpus=1))
    data_dir: str | None = Field(
        default=None, description="absolute directory on the cluster that `labctl mount` mounts"
    )
    mount_point: Path | None = Field(
        default=None, description="local directory where `labctl mount` mounts data_dir"
    )

    @field_validator("key_file", "known_hosts", "mount_point", "ssh_config")
    @classmethod
    def _expand_paths(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path else None

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, data_dir: str | None) -> str | None:
        return None if data_dir is None else cls._absolute(data_dir)

    @model_validator(mode="after")
    def _mount_pair(self) -> ClusterConfig:
        if (self.data_dir is None) != (self.mount_point is None):
            raise ValueError("'data_dir' and 'mount_point' go together: set both or neither")
        if self.mount_point is not None and not self.mount_point.is_absolute():
            raise ValueError("'mount_point' must be an absolute path (or start with ~)")
        return self

    @field_validator("scratch")
    @classmethod
    def _absolute(cls, scratch: str) -> str:
        scratch = os.path.expanduser(scratch)
        if not SAFE_PATH.fullmatch(scratch) or ".." in scratch.split("/"):
            raise ValueError("must be an absolute path of letters, digits and _ . - / only")
        return scratch.rstrip("/") or "/"

    @field_validator("proxy_jump")
    @classmethod
    def _hops(cls, hops: list[str]) -> list[str]:
        for hop in hops:
            if not re.fullmatch(HOP, hop):
                raise ValueError(f"gateway {hop!r} must be [user@]host[:port]")
        return hops

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        if self.ssh_alias and (self.host or self.user or self.proxy_jump):
            raise ValueError("'ssh_alias' takes host, user and proxy_jump from ~/.ssh/config")
        if self.type == "ssh" and not (self.ssh_alias or (self.host and self.user)):
            raise ValueError("an ssh cluster needs 'host' and 'user', or 'ssh_alias'")
        if self.type == "ssh" and self.scheduler == "process":
            raise ValueError("the process scheduler runs on a local cluster only")
        return self


def source_pipelines() -> Path | None:
    """The pipelines/ beside labctl's own source, when labctl runs from the lab's git checkout
    (an editable install); None for an installed wheel."""
    checkout = Path(__file__).resolve().parents[2]  # labctl/config/__init__.py
    found = checkout / "pipelines"
    return found if (found / "__main__.py").is_file() and (checkout / ".git").exists() else None


class WatchdogConfig(Settings):
    """How the cron-run watchdog behaves on this machine."""

    state_dir: Path = Field(
        default_factory=lambda: default_data_dir() / "watchdog",
        description="transfer logs and staging folders of running jobs",
    )
    pipelines_dir: Path | None = Field(
        default=None,
        description="the lab's pipelines/ checkout (git) shipped to jobs; default: the one "
        "beside labctl's own source",
    )
    lease_seconds: int = Field(default=600, ge=1)
    max_retries: int = Field(default=5, ge=0)
    backoff_seconds: float = Field(default=30, ge=0, description="doubles with each retry")
    bwlimit_kib: int | None = Field(
        default=None, ge=1, description="rsync's bandwidth cap (KiB/s) for inputs and results"
    )
    log_dir: Path = Field(
        default_factory=lambda: default_data_dir() / "logs",
        description="cron: one rotated log per stage, and the lock files of overlapping runs",
    )
    cron_minutes: int = Field(default=1, ge=1, le=59, description="cron runs each stage this often")

    @field_validator("state_dir", "pipelines_dir", "log_dir")
    @classmethod
    def _expand_dirs(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path else None

    @property
    def pipelines(self) -> Path:
        """The pipelines checkout: as configured, else the one labctl runs from."""
        found = self.pipelines_dir or source_pipelines()
        if found is None:
            raise ConfigError(
                "no pipelines checkout: this labctl is not run from the lab's repository; set "
                "watchdog.pipelines_dir to the lab's pipelines/ (a git checkout)"
            )
        return found


def this_machine() -> dict[str, ClusterConfig]:
    """The clusters without a `clusters:` section: `local`, jobs as plain processes here."""
    scratch = str(default_data_dir() / "scratch")
    return {"local": ClusterConfig(type="local", scratch=scratch, scheduler="process")}


class Config(Settings):
    user: str = Field(default_factory=getpass.getuser, description="your lab username")
    email: str = Field(default="", pattern=r"^([^@\s]+@[^@\s]+)?$", description="your e-mail")
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    data: DataSchema = Field(default_factory=DataSchema)
    clusters: dict[str, ClusterConfig] = Field(default_factory=this_machine)
    job_types: dict[str, JobTypeConfig] = Field(
        default_factory=dict, description="adjusts the types pipelines/ declares, or adds some"
    )
    offered_job_types: list[str] | None = Field(
        default=None, description="the job types offered; default: all there are"
    )
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    service: ServiceConfig | None = Field(default=None, description="a member's way in: see README")
    notify: NotifyConfig = Field(default_factory=NotifyConfig)

    @field_validator("clusters")
    @classmethod
    def _cluster_names(cls, clusters: dict[str, ClusterConfig]) -> dict[str, ClusterConfig]:
        for name in clusters:
            if not CLUSTER_NAME.fullmatch(name):
                raise ValueError(
                    f"cluster name {name!r}: up to 24 letters, digits, _ . - "
                    "(starting with a letter or digit)"
                )
        return clusters

    @model_validator(mode="after")
    def _type_clusters_exist(self) -> Config:
        for name, spec in self.job_types.items():
            unknown = sorted(set(spec.clusters) - set(self.clusters))
            if unknown:
                raise ValueError(f"job type {name}: no cluster {', '.join(unknown)} is configured")
        return self


def load_config(path: Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Find, read and validate the configuration; raise `ConfigError` with one clear line."""
    env = dict(os.environ) if env is None else env
    source = path or (Path(env["LABCTL_CONFIG"]) if env.get("LABCTL_CONFIG") else None)
    if source is None and default_config_path().is_file():
        source = default_config_path()
    raw = _read_yaml(source) if source else {}
    try:
        config = Config.model_validate(raw)
    except PydanticValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc)}") from None
    secrets = {"LABCTL_DB_PASSWORD": _uri_password(config.database.uri), **config.notify.secrets}
    held = [var for var, secret in secrets.items() if secret]
    if source and held and source.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{source} holds a password but is readable by others: "
            f"run 'chmod 600 {source}' or move the password to {held[0]}"
        )
    return _apply_env(config.model_copy(update={"notify": config.notify.with_env(env)}), env)


RawSettings = dict[str, Any]
"""Settings as a YAML file writes them: only what is given (no defaults), not yet validated (that
is `load_config`'s); a cluster's or the database's settings inside them are such a mapping too."""


def _read_yaml(path: Path) -> RawSettings:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=BoundedLoader)
    except ValidationError as exc:  # nested too deep
        raise ConfigError(f"{path}: {exc}") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an impossible date (2021-13-01)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def _uri_password(uri: str) -> str | None:
    return None if uri == EMBEDDED else urlsplit(uri).password


def _apply_env(config: Config, env: dict[str, str]) -> Config:
    uri = env.get("LABCTL_DB_URI") or config.database.uri
    password = env.get("LABCTL_DB_PASSWORD")
    if password and uri != EMBEDDED:
        uri = _with_password(uri, password)
    if uri == config.database.uri:
        return config
    try:
        database = DatabaseConfig.model_validate({**config.database.model_dump(), "uri": uri})
    except PydanticValidationError as exc:
        raise ConfigError(f"LABCTL_DB_URI: {describe(exc)}") from None
    return config.model_copy(update={"database": database})


def _with_password(uri: str, password: str) -> str:
    scheme, rest = uri.split("://", 1)
    userinfo, at, hosts = rest.rpartition("@")
    if not at:
        raise ConfigError("LABCTL_DB_PASSWORD is set but the database URI names no user")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{quote(password, safe='')}@{hosts}"

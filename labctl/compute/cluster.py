"""A configured cluster, opened for one watchdog run: its runner (riding the cluster's SSH
session) and its scheduler, plus the rsync target for data. `ClusterPool` opens each cluster at
most once per run, so each session is checked once per run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from labctl.compute.scheduler import ProcessScheduler, Scheduler, SlurmScheduler
from labctl.compute.transport import (
    LocalRunner,
    Runner,
    Session,
    Sessions,
    SSHRunner,
    SSHTarget,
    private_dir,
)
from labctl.config import ClusterConfig, Config, default_data_dir


@dataclass
class Cluster:
    name: str
    config: ClusterConfig
    runner: Runner
    scheduler: Scheduler
    target: SSHTarget | None  # None: the cluster is this machine

    def require_session(self, *, fresh: bool = False) -> None:
        """Raise SessionDownError when the cluster's session is down and only a person can open
        it (a no-op for this machine)."""
        if isinstance(self.runner, SSHRunner):
            self.runner.require_session(fresh=fresh)

    def down_since(self) -> dt.datetime:
        """Since when the cluster cannot be reached (now for this machine, which always can)."""
        if isinstance(self.runner, SSHRunner):
            return self.runner.down_since()
        return dt.datetime.now(dt.UTC)

    def close(self) -> None:
        self.runner.close()


def sessions_dir() -> Path:
    """The private directory of this user's sessions (sockets, ssh configs, records)."""
    return private_dir(default_data_dir() / "ssh")


def ssh_target(name: str, config: ClusterConfig) -> SSHTarget | None:
    """How ssh reaches the cluster; None for this machine."""
    if config.type == "local":
        return None
    lifetime = int(config.session_hours * 3600)
    directory = str(sessions_dir())
    if config.ssh_alias:
        return SSHTarget(
            name,
            config.ssh_alias,
            directory,
            auth=config.auth,
            alias_config=str(config.ssh_config),
            lifetime_seconds=lifetime,
        )
    assert config.host and config.user  # checked by ClusterConfig
    return SSHTarget(
        name=name,
        host=config.host,
        directory=directory,
        user=config.user,
        port=config.port,
        key_file=str(config.key_file or Path.home() / ".ssh" / "id_ed25519"),
        known_hosts=str(config.known_hosts),
        auth=config.auth,
        proxy_jump=tuple(config.proxy_jump),
        lifetime_seconds=lifetime,
    )


def open_cluster(name: str, config: ClusterConfig) -> Cluster:
    """Build the cluster's runner and scheduler; the session is checked on first use."""
    target = ssh_target(name, config)
    runner: Runner = LocalRunner() if target is None else SSHRunner(target)
    scheduler: Scheduler
    if config.scheduler == "process":
        scheduler = ProcessScheduler(runner)
    else:
        scheduler = SlurmScheduler(runner, jobcomp=config.accounting == "jobcomp")
    return Cluster(name, config, runner, scheduler, target)


def session_of(name: str, config: ClusterConfig, sessions: Sessions | None = None) -> Session:
    """The cluster's session as its master answers now (an ssh cluster only)."""
    target = ssh_target(name, config)
    if target is None:
        raise ValueError(f"cluster {name} is this machine: it has no session")
    return (sessions or Sessions()).status(target)


@dataclass
class ClusterPool:
    """The clusters one watchdog run talks to, each opened once and closed at the end."""

    config: Config
    opened: dict[str, Cluster] = field(default_factory=dict)

    def get(self, name: str) -> Cluster:
        if name not in self.opened:
            self.opened[name] = open_cluster(name, self.config.clusters[name])
        return self.opened[name]

    def sessions(self, *, every: bool = False) -> list[Session]:
        """The sessions of the ssh clusters this run used, as it found them; with `every`, also
        of the others, as their masters answer now (a local socket check, no login)."""
        found = []
        for name, config in self.config.clusters.items():
            if config.type != "ssh" or not (every or name in self.opened):
                continue
            cluster = self.get(name)
            assert isinstance(cluster.runner, SSHRunner)
            found.append(cluster.runner.session())
        return found

    def close(self) -> None:
        for cluster in self.opened.values():
            cluster.close()
        self.opened.clear()

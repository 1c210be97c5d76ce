"""A configured cluster, opened for one watchdog run: one runner (one SSH connection) and its
scheduler, plus the rsync target for data. `ClusterPool` opens each cluster at most once per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from labctl.config import ClusterConfig, Config
from labctl.scheduler import ProcessScheduler, Scheduler, SlurmScheduler
from labctl.transport import LocalRunner, Runner, SSHRunner, SSHTarget


@dataclass
class Cluster:
    name: str
    config: ClusterConfig
    runner: Runner
    scheduler: Scheduler
    target: SSHTarget | None  # None: the cluster is this machine

    def close(self) -> None:
        self.runner.close()


def ssh_target(config: ClusterConfig) -> SSHTarget | None:
    if config.type == "local":
        return None
    assert config.host and config.user  # checked by ClusterConfig
    return SSHTarget(
        host=config.host,
        user=config.user,
        key_file=str(config.key_file or Path.home() / ".ssh" / "id_ed25519"),
        known_hosts=str(config.known_hosts),
        port=config.port,
    )


def open_cluster(name: str, config: ClusterConfig) -> Cluster:
    """Build the cluster's runner and scheduler; the SSH connection opens on first use."""
    target = ssh_target(config)
    runner: Runner = LocalRunner() if target is None else SSHRunner(target)
    scheduler: Scheduler
    if config.scheduler == "process":
        scheduler = ProcessScheduler(runner)
    else:
        scheduler = SlurmScheduler(runner, jobcomp=config.accounting == "jobcomp")
    return Cluster(name, config, runner, scheduler, target)


@dataclass
class ClusterPool:
    """The clusters one watchdog run talks to, each opened once and closed at the end."""

    config: Config
    opened: dict[str, Cluster] = field(default_factory=dict)

    def get(self, name: str) -> Cluster:
        if name not in self.opened:
            self.opened[name] = open_cluster(name, self.config.clusters[name])
        return self.opened[name]

    def close(self) -> None:
        for cluster in self.opened.values():
            cluster.close()
        self.opened.clear()

"""`labctl doctor`'s look for what finished jobs left behind: the watchdog's state folders here,
and on each cluster (one command, only while its session is up) folders of links of killed pulls
and job folders; `--clean` removes them.

A job's folders are over once it failed (its state folder; its folder on the cluster stays for a
look at its logs), or it completed or was cancelled and stopped and the watchdog cleaned up after
it, or it is not in the store at all.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from labctl.access.lab import Lab
from labctl.compute.cluster import open_cluster
from labctl.compute.transport import Sessions, TransportError
from labctl.config import ClusterConfig, Config
from labctl.damaged import Listing
from labctl.errors import LabctlError, NotFoundError
from labctl.model.job import Job
from labctl.model.states import TERMINAL, JobState
from labctl.stages import own_job_id

PULL_AGE = dt.timedelta(hours=6)
"""A folder of links older than this is a killed pull's (a live pull removes its own)."""
_PULL = re.compile(r"\.pull-[0-9a-f]+")
# Out: one line per folder in the scratch folder $1, "MTIME NAME" (nothing if there is none).
_LIST = (
    'cd -- "$1" 2>/dev/null || exit 0; find . -mindepth 1 -maxdepth 1 -type d -printf "%T@ %f\\n"'
)


@dataclass(frozen=True)
class Leftovers:
    """What one place (`name`) holds that is left over, and the command that removes it; with
    `cleaned`, removed already; `error`: the place could not be looked at."""

    name: str
    paths: list[str]
    remove: str
    cleaned: bool = False
    error: str = ""


@dataclass
class Known:
    """The member's jobs as a listing gave them (None: damaged); any other is asked for alone,
    as a listing of the service ends at a page."""

    lab: Lab
    jobs: dict[str, Job | None]

    @classmethod
    def of(cls, lab: Lab, listing: Listing[Job]) -> Known:
        found: dict[str, Job | None] = {job.job_id: job for job in listing.items}
        return cls(lab, found | {damaged.id: None for damaged in listing.damaged})

    def over(self, job_id: str, *, failed: bool) -> bool:
        """Whether nothing needs the folders of job `job_id` any more (of a failed one: if
        `failed`); a job in no store is over, one that cannot be read is not."""
        if job_id not in self.jobs:
            try:
                self.jobs[job_id] = self.lab.job(job_id)
            except NotFoundError:
                return True
            except (LabctlError, ValueError):  # damaged, or not to be read now: left alone
                self.jobs[job_id] = None
        job = self.jobs[job_id]
        if job is None:
            return False
        if job.status is JobState.FAILED:
            return failed
        return job.status in TERMINAL and job.scratch_cleaned


def state_dirs(state_dir: Path, jobs: Known, clean: bool) -> Leftovers:
    """Job folders in the watchdog's state directory that no job needs any more."""
    found = sorted(state_dir.iterdir()) if state_dir.is_dir() else []
    stale = [p for p in found if own_job_id(p.name) and jobs.over(p.name, failed=True)]
    if clean:
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)  # links in them removed, never followed
    paths = [str(p) for p in stale]
    return Leftovers(
        "leftovers (watchdog state)", paths, shlex.join(["rm", "-rf", "--", *paths]), clean
    )


def stale_on_cluster(
    listing: str, scratch: PurePosixPath, jobs: Known, now: dt.datetime
) -> list[str]:
    """The folders of a scratch listing (`_LIST`) that are left over."""
    stale = []
    for line in listing.splitlines():
        mtime, _, name = line.partition(" ")
        try:
            age = now - dt.datetime.fromtimestamp(float(mtime), dt.UTC)
        except ValueError:
            continue
        if (_PULL.fullmatch(name) and age > PULL_AGE) or (
            own_job_id(name) and name.startswith("j") and jobs.over(name, failed=False)
        ):
            stale.append(str(scratch / name))
    return sorted(stale)


def on_cluster(
    name: str, config: ClusterConfig, jobs: Known, now: dt.datetime, clean: bool
) -> Leftovers | None:
    """Left-over folders in the cluster's scratch folder; None while its session is down."""
    cluster = open_cluster(name, config)
    what = f"{name}: leftovers"
    try:
        target = cluster.target  # a session to open with a second factor: only while it is up
        if target is not None and target.auth != "key" and not Sessions().status(target).up:
            return None
        scratch = PurePosixPath(config.scratch)
        listing = cluster.runner.run(["sh", "-c", _LIST, "list", str(scratch)], timeout=60)
        paths = stale_on_cluster(listing.stdout, scratch, jobs, now)
        remove = ["rm", "-rf", "--", *paths]
        if clean and paths:
            cluster.runner.run(remove, timeout=600)
        return Leftovers(what, paths, f"on {name}: {shlex.join(remove)}", clean)
    except TransportError as exc:
        return Leftovers(what, [], "", error=str(exc))
    finally:
        cluster.close()


def find_leftovers(
    config: Config, lab: Lab, listing: Listing[Job], now: dt.datetime, clean: bool = False
) -> Iterator[Leftovers]:
    """The leftovers here and on each cluster of the member's jobs (`listing`, else asked for)
    and of jobs no store has any more; see the module."""
    jobs = Known.of(lab, listing)
    yield state_dirs(config.watchdog.state_dir, jobs, clean)
    for name, cluster in config.clusters.items():
        if (found := on_cluster(name, cluster, jobs, now, clean)) is not None:
            yield found

"""The pipelines code, shipped once per cluster and commit: one read-only copy that every job of
that commit runs, `<scratch>/code/<commit>/pipelines` beside the job folders.

A copy is used only once it has its name, and it gets its name only when complete: it is rsynced
into a temporary folder of its own, made read-only, marked `.complete` and renamed into place.
Two runs shipping the same commit at once both finish their copies; one rename wins and the other
run removes its own copy. A run killed half-way leaves a temporary folder no job uses (removed by
a later shipment once a day old). A job of a dirty tree (allowed at submit) carries the working
tree in its own folder, as before.
"""

from __future__ import annotations

import secrets
import string
from pathlib import Path, PurePosixPath

from labctl.compute.batch import JobLayout
from labctl.compute.cluster import Cluster
from labctl.compute.transport import CommandError, LocalRunner, TransportError
from labctl.jobs.codeversion import export_commit, shipped_commit
from labctl.model.job import Job
from labctl.stages import StageRun

COMPLETE = ".complete"

# In the code root $1: "present" if commit $2 is there complete, else make the temporary folder
# $3 and say "absent" (removing what killed shipments left, once a day old).
_PREPARE = r"""
mkdir -p -- "$1" && cd "$1" || exit 3
if [ -f "$2/$4" ]; then echo present; exit 0; fi
find . -maxdepth 1 -name '.*.partial' -mtime +0 \
  -exec sh -c 'chmod -R u+w -- "$@"; rm -rf -- "$@"' sweep {} +
mkdir -- "$3" && echo absent
"""

# Make the temporary folder $3 read-only, mark it complete and rename it to $2; if another run
# renamed its copy first, remove ours.
_PUBLISH = r"""
cd "$1" || exit 3
chmod -R a-w -- "$3/pipelines" && : > "$3/$4" || exit 3
if mv -T -- "$3" "$2" 2>/dev/null; then chmod a-w -- "$2/$4" "$2"; exit 0; fi
chmod -R u+w -- "$3" && rm -rf -- "$3"
[ -f "$2/$4" ] || { echo "$1/$2 is there but not complete" >&2; exit 4; }
"""


def code_folder(run: StageRun, job: Job) -> Path:
    """The pipelines code to ship: the recorded commit, or the working tree a dirty job allowed."""
    version = job.pipelines
    pipelines = run.config.watchdog.pipelines
    if version["dirty"]:
        return pipelines
    return export_commit(pipelines, version, run.config.watchdog.state_dir / "code")


def shared_code(run: StageRun, cluster: Cluster, job: Job, layout: JobLayout) -> str | None:
    """The folder on the cluster holding the job's commit of the pipelines (shipped first if it
    is not there yet: checked once per run); None for a dirty tree, which the job carries."""
    commit = shipped_commit(job.pipelines)
    if commit is None:
        return None
    if not (7 <= len(commit) <= 64 and set(commit) <= set(string.hexdigits)):
        raise ValueError(f"job {job.job_id} records no valid commit: {commit!r}")
    folder = layout.shared_code(commit)
    if (cluster.name, folder) in run.shipped:
        return str(folder)
    root = folder.parent
    temp = f".{commit}.{secrets.token_hex(4)}.partial"
    args = [str(root), commit, temp, COMPLETE]
    if remote(cluster, _PREPARE, args, "preparing the pipelines code") != "present":
        ship(run, cluster, code_folder(run, job), root / temp / "pipelines", job)
        remote(cluster, _PUBLISH, args, "publishing the pipelines code")
        run.did["code shipped"] += 1
    run.shipped.add((cluster.name, folder))
    return str(folder)


def remote(cluster: Cluster, script: str, args: list[str], what: str) -> str:
    """The output of one of the scripts above, run on the cluster; a failure in one line."""
    try:
        return cluster.runner.run(["sh", "-c", script, "code", *args], timeout=300).stdout.strip()
    except CommandError as exc:
        why = exc.result.stderr.strip().splitlines() or [f"exit {exc.result.returncode}"]
        raise TransportError(f"{what} on {cluster.name} failed: {why[0]}") from None


def ship(run: StageRun, cluster: Cluster, source: Path, dest: PurePosixPath, job: Job) -> None:
    """rsync the code into its temporary folder, in the foreground (it is small), renewing the
    job's lease meanwhile."""
    argv = run.push_argv(cluster, source, dest)
    every = max(1.0, run.lease.total_seconds() / 3)
    try:
        LocalRunner().run(argv, timeout=3600, every=(every, lambda: run.renew(job)))
    except CommandError as exc:
        cluster.require_session(fresh=True)  # dropped meanwhile: wait for it, spend no retry
        raise TransportError(f"shipping the pipelines code failed: {exc}") from None

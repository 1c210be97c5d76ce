"""Removing what finished jobs leave: each completed (results verified at home) or stopped
cancelled job's folder on its cluster, with its shipped inputs, in one command per cluster and
batch, then its state folder here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import PurePosixPath

from labctl.compute.cluster import Cluster
from labctl.compute.transport import TransportError
from labctl.jobs.work import Selection, Work
from labctl.model.job import Job, JobRef, Progress
from labctl.stages import StageRun, own_job_id
from labctl.stages.ops import UpdateAll

BATCH = 100
"""Jobs per pull at most: bounds the file lists and the command line of the cleanup."""


def clean_up(run: StageRun, job_id: str | None = None) -> None:
    """Remove the folders still to remove (here and on the cluster) of completed jobs and of
    stopped cancelled ones, or of job `job_id` only."""
    for batch in run.batches(Selection(work=Work.TO_CLEAN, job_id=job_id), BATCH):
        for cluster, jobs in per_cluster(run, batch):
            clean_scratch(run, cluster, jobs)


def per_cluster(run: StageRun, jobs: Sequence[Job]) -> list[tuple[Cluster, list[Job]]]:
    """The jobs by cluster; a job whose cluster left the config fails, naming it."""
    found: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        run.alone(job, lambda job: found[run.cluster(job).name].append(job))
    return [(run.pool.get(name), jobs) for name, jobs in found.items()]


def clean_scratch(
    run: StageRun, cluster: Cluster, jobs: Sequence[Job], links: PurePosixPath | None = None
) -> None:
    """Remove, in one command, the folders on the cluster of completed jobs (their results are
    verified at home) or stopped cancelled ones, and a pull's folder of `links`; then each job's
    state folder here. A job whose recorded folder is not its own (named by its id, in a scratch
    folder) is refused and noted; one whose transfer is still being stopped waits for a later
    run."""
    mine = []
    for job in jobs:
        root = run.layout(job).root  # where its folder was made, whatever the config says now
        if (
            not own_job_id(job.job_id)
            or root.name != job.job_id
            or not root.is_absolute()
            or ".." in root.parts
            or len(root.parts) < 3
        ):
            run.notes.append(f"{job.job_id}: refusing to delete {root}: not the job's folder")
            run.did["errors"] += 1
        elif not run.transfer_running(job):
            mine.append((job, root))
    folders = [str(root) for _, root in mine] + ([str(links)] if links else [])
    if not folders:
        return
    try:  # rm removes a link it is given, never what it points to
        cluster.runner.run(["rm", "-rf", "--", *folders])
    except TransportError:
        return  # the next run tries again
    if mine:
        refs = [JobRef.of(job) for job, _ in mine]
        run.store.run(UpdateAll(jobs=refs, progress=Progress(scratch_cleaned=True)))
        run.did["cleaned"] += len(mine)
    for job, _ in mine:
        run.forget(job)

"""Stage 3, the way home: results in one pull per cluster and run, each verified before its job
is completed.

Per cluster, for a batch of due `retrieving` jobs: one remote command gives the size and SHA-256
of every job's outputs and inputs (a job with a missing output fails alone, before anything
moves) and links each output into a folder of the batch, at the path its results folder has here
below the results folders' common parent; one rsync (`--copy-links`) of that folder brings every
output straight into its job's results folder. Then each job on its own: every file's local
SHA-256 must equal the cluster's before the job is completed and its results recorded; a job
whose files did not arrive intact is retried or failed alone. One `rm -rf` removes the batch's
folder of links (also when the pull failed) and the folders of all the jobs completed; then their
state folders here go too. Cancelled jobs' folders, once stopped, are removed the same way.

kill -9 anywhere leaves each job retrieving (the next run frees the dead run's leases, starts
over, and rsync skips what arrived) or completed with its folder still to remove (the next run
removes it); a folder of links left behind is removed by a later pull once a day old.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from labctl.compute.batch import JobLayout, array_size, expected_outputs
from labctl.compute.cluster import Cluster
from labctl.compute.transport import (
    CommandError,
    LocalRunner,
    TransportError,
    rsync_argv,
)
from labctl.errors import ValidationError
from labctl.jobs.compare import reproduction, sha256_file
from labctl.jobs.submit import dataset_dirs
from labctl.jobs.work import Selection, Work
from labctl.model.job import Job, JobRef
from labctl.model.reproduction import ResultFile
from labctl.model.states import FailureReason, JobState
from labctl.stages import StageRun
from labctl.stages.cleanup import BATCH, clean_scratch, clean_up, per_cluster
from labctl.stages.ops import RecordReproduction, RecordResult

# In the scratch folder $1, make the folder $2 (removing those of killed runs once a day old);
# stdin: records of three lines, a job folder, a file in it, then "-" or where in $2 to link to
# it. Out, one line per record: "SIZE SHA256" if the file is a regular file reached through no
# symlink below the job folder (and then it is linked), else "-": a job's link cannot bring
# home, nor have summed, a file from outside its folder.
_SUMS = r"""
cd "$1" || exit 3
find . -maxdepth 1 -name '.pull-*' -mtime +0 -exec rm -rf -- {} +
mkdir -- "$2" && cd "$2" || exit 3
last=
while IFS= read -r root && IFS= read -r name && IFS= read -r link; do
  f=$(realpath -e -- "$root/$name" 2>/dev/null)
  if [ -f "$f" ] && [ "$f" = "$(realpath -e -- "$root")/$name" ]; then
    printf '%s %s\n' "$(stat -c %s -- "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"
    [ "$link" = - ] && continue
    dir=${link%/*}
    if [ "$dir" != "$last" ]; then mkdir -p -- "$dir" || exit 3; last=$dir; fi
    ln -s -- "$f" "$link" || exit 3
  else echo -; fi
done
"""
# The last lines of each regular file in the job's logs/ $1 (no link followed: a log tail is
# read by every member).
_LOG_TAIL = r"""
[ -L "$1" ] && exit 0
for f in "$1"/*; do
  [ -f "$f" ] && [ ! -L "$f" ] && { echo "== ${f##*/}"; tail -n 20 -- "$f"; }
done
"""

Sums = dict[PurePosixPath, tuple[int, str] | None]


@dataclass(frozen=True)
class Fetch:
    """One job's part of a pull: its folder on the cluster, its files, its results folder."""

    job: Job
    layout: JobLayout
    outputs: list[str]
    dest: Path
    follow_up: bool  # a finished array whose merge job is to be queued

    @property
    def real(self) -> Path:
        """`dest` with no symlink on the way, which rsync would refuse to write through."""
        return self.dest.resolve()

    @property
    def inputs(self) -> list[str]:
        return [f"data/{f}" for f in self.job.datafiles] + [
            f"raw/{f}" for f in self.job.datarawfiles
        ]


@dataclass(frozen=True)
class Pull:
    """A batch's way home: `links`, a folder on the cluster holding a link to every output at
    the path its results file has below `home` here."""

    fetches: list[Fetch]
    links: PurePosixPath
    home: Path

    @classmethod
    def of(cls, fetches: list[Fetch]) -> Pull:
        home = Path(os.path.commonpath([fetch.real for fetch in fetches]))
        links = fetches[0].layout.root.parent / f".pull-{secrets.token_hex(6)}"
        return cls(fetches, links, home)

    def link(self, fetch: Fetch, name: str) -> str:
        return f"{os.path.relpath(fetch.real, self.home)}/{name}"

    def records(self) -> list[tuple[PurePosixPath, PurePosixPath, str]]:
        """Each file whose checksum a job needs: its job folder, its path there, and where to
        link it ("-": inputs stay)."""
        found = []
        for fetch in self.fetches:
            root = fetch.layout.root
            found += [
                (root, PurePosixPath("outputs", n), self.link(fetch, n)) for n in fetch.outputs
            ]
            found += [(root, PurePosixPath("inputs", n), "-") for n in fetch.inputs]
        return found


class Held:
    """A batch's leases, renewed in one write whenever a third of the lease has passed."""

    def __init__(self, run: StageRun, jobs: Sequence[Job]) -> None:
        self.run, self.jobs, self.since = run, jobs, time.monotonic()

    def renew(self) -> None:
        if time.monotonic() - self.since >= self.run.lease.total_seconds() / 3:
            self.run.renew(*self.jobs)
            self.since = time.monotonic()


def run_retrieval(run: StageRun) -> None:
    """Bring home the results of every due job, then remove the folders still to remove."""
    for batch in run.batches(Selection(work=Work.TO_RETRIEVE), BATCH):
        for cluster, jobs in per_cluster(run, batch):
            retrieve(run, cluster, jobs)
    clean_up(run)


def retrieve(run: StageRun, cluster: Cluster, jobs: Sequence[Job]) -> None:
    """retrieving -> completed for each job whose outputs all arrive intact; see the module."""
    held = Held(run, jobs)
    fetches: list[Fetch] = []
    for job in jobs:
        run.alone(job, partial(prepare, run, fetches))
    if not fetches:
        return
    batch = Pull.of(fetches)
    completed: list[Job] = []
    try:
        bring_home(run, cluster, batch, held, completed)
    finally:  # whatever happened, the batch's folder of links goes (with the completed jobs')
        clean_scratch(run, cluster, completed, batch.links)


def bring_home(
    run: StageRun, cluster: Cluster, batch: Pull, held: Held, completed: list[Job]
) -> None:
    """Checksums, one pull, then each job verified and completed (added to `completed`)."""
    try:
        sums = remote_sums(cluster, batch)
    except TransportError as exc:
        for fetch in batch.fetches:
            run.alone(fetch.job, partial(run.setback, error=exc, reason=FailureReason.RETRIEVE))
        return
    held.renew()
    ready = []
    for fetch in batch.fetches:
        absent = [name for name in fetch.outputs if sums[fetch.layout.outputs / name] is None]
        if absent:
            run.alone(fetch.job, partial(not_written, run, cluster, fetch, absent))
        else:
            ready.append(fetch)
    error = None
    if ready:
        try:
            pull(run, cluster, batch, ready, held.renew)
        except TransportError as exc:  # what did arrive intact is still verified and kept
            error = exc
    for fetch in ready:
        held.renew()
        run.alone(fetch.job, partial(complete, run, fetch, sums, error, completed))


def prepare(run: StageRun, into: list[Fetch], job: Job) -> None:
    """The job's part of the pull; a job whose dataset was deleted fails instead."""
    spec = run.job_type(job)
    entry = run.entry_or_fail(job, FailureReason.RETRIEVE)
    if entry is None:
        return
    dest = dataset_dirs(entry, run.config)[0] / "results" / job.job_id
    if "\n" in str(dest.resolve()):  # the lists sent to the cluster hold one path a line
        note = f"cannot bring results home to {str(dest)!r}: its name has a line break"
        run.move(job, JobState.FAILED, note, reason=FailureReason.RETRIEVE)
        return
    follow_up = bool(spec.merge_with) and array_size(job) > 1
    into.append(Fetch(job, run.layout(job), expected_outputs(job, spec), dest, follow_up))


def remote_sums(cluster: Cluster, batch: Pull) -> Sums:
    """Size and SHA-256 of each file on the cluster (None for a missing one), each output linked
    into the batch's folder: one command."""
    records = batch.records()
    listing = "".join(f"{root}\n{path}\n{link}\n" for root, path, link in records)
    argv = ["sh", "-c", _SUMS, "sums", str(batch.links.parent), batch.links.name]
    out = cluster.runner.run(argv, input=listing).stdout.splitlines()
    if len(out) != len(records):
        raise TransportError(f"the checksums of {len(records)} files came back in {len(out)} lines")
    found: Sums = {}
    for (root, path, _), line in zip(records, out, strict=True):
        size, _, digest = line.partition(" ")
        found[root / path] = None if line == "-" else (int(size), digest)
    return found


def not_written(run: StageRun, cluster: Cluster, fetch: Fetch, absent: list[str], job: Job) -> None:
    run.move(
        job,
        JobState.FAILED,
        f"the job did not write {', '.join(absent)}",
        fields={"log_tail": log_tail(cluster, fetch.layout)},
        reason=FailureReason.RETRIEVE,
    )


def log_tail(cluster: Cluster, layout: JobLayout) -> str:
    try:
        result = cluster.runner.run(["sh", "-c", _LOG_TAIL, "tail", str(layout.logs)], check=False)
    except TransportError as exc:
        return f"(log not readable: {exc})"
    return result.stdout[-4000:]


def pull(
    run: StageRun,
    cluster: Cluster,
    batch: Pull,
    ready: Sequence[Fetch],
    renew: Callable[[], None],
) -> None:
    """One rsync of the batch's links (in the foreground: results are smaller than inputs) for
    the outputs of the `ready` jobs, each straight into its results folder, renewing the leases
    while it runs."""
    names = []
    for fetch in ready:
        for name in fetch.outputs:
            (fetch.dest / name).parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            names.append(batch.link(fetch, name))
    argv = rsync_argv(
        [f"{batch.links}/"],
        f"{batch.home}/",
        target=cluster.target,
        direction="pull",
        files_from="-",
        copy_links=True,
        implied_dirs=False,  # the results folders exist; no folder above them is changed
        bwlimit_kib=run.config.watchdog.bwlimit_kib,
        chmod="go-w,o-rwx",  # the member's results: their group may read them, no one else
    )
    every = max(1.0, run.lease.total_seconds() / 3)
    listing = "".join(f"{name}\0" for name in names)
    try:
        LocalRunner().run(argv, timeout=24 * 3600, input=listing, every=(every, renew))
    except CommandError as exc:
        cluster.require_session(fresh=True)  # dropped meanwhile: wait for it, spend no retry
        raise TransportError(f"bringing results home failed: {exc}") from None


def verified(fetch: Fetch, sums: Sums) -> list[ResultFile] | str:
    """The job's result files, each as it arrived matching the cluster's size and SHA-256; or
    the name of the first that does not."""
    results = []
    for name in fetch.outputs:
        size, digest = sums[fetch.layout.outputs / name] or (0, "")
        local = fetch.dest / name
        try:
            intact = local.stat().st_size == size and sha256_file(local) == digest
        except OSError:  # not there (or not readable): it did not arrive
            intact = False
        if not intact:
            return name
        results.append(ResultFile(name=name, path=str(local), size=size, sha256=digest))
    return results


def complete(
    run: StageRun,
    fetch: Fetch,
    sums: Sums,
    error: TransportError | None,
    completed: list[Job],
    job: Job,
) -> None:
    """Record and complete one job whose files all arrived intact; else retry or fail it."""
    results = verified(fetch, sums)
    if isinstance(results, str):
        if error is not None and run.wait_out([job], job.compute_cluster, error):
            return  # its session is down or it cannot be reached: no retry spent
        attempt = job.retries + 1
        run.retry_later(  # whatever failed the batch's pull may be another job's file
            job,
            f"{results} arrived damaged (size or checksum differs)"
            if error is None
            else f"{results} did not arrive intact ({error})",
            transient=True,
            attempt=attempt,
            reason=FailureReason.RETRIEVE,
            fields={"retries": attempt},
        )
        return
    inputs = [
        {"name": name, "size": found[0], "sha256": found[1]}
        for name in fetch.inputs
        if (found := sums[fetch.layout.inputs / name]) is not None
    ]
    dest = fetch.dest
    try:
        environments = [
            json.loads((dest / r.name).read_text())
            for r in results
            if r.name.startswith("environment")
        ]
    except ValueError as exc:  # before anything is recorded: the job fails, nothing half-done
        note = f"an environment report brought home is not valid JSON ({exc})"
        run.move(job, JobState.FAILED, note, reason=FailureReason.RETRIEVE)
        return
    try:
        run.store.run(RecordResult(job=JobRef.of(job), dir=str(dest), files=results))
    except ValidationError as exc:  # the entry cannot take the record: nothing half-done
        note = f"the results cannot be recorded on dataset {job.dataset}: {exc}"
        run.move(job, JobState.FAILED, note, reason=FailureReason.RETRIEVE)
        return
    done = run.move(
        job,
        JobState.COMPLETED,
        f"{len(results)} result file(s) verified in {dest}",
        fields={
            "results": results,
            "result_dir": str(dest),
            "scratch_cleaned": False,
            "input_checksums": inputs,
            "environment": environments,
            "follow_up_pending": fetch.follow_up,
        },
    )
    if done is not None:
        completed.append(done)
    if done is not None and done.rerun is not None and done.rerun.compare:
        asked = done.rerun
        verdict = reproduction(asked.job_id, done.job_id, asked.results, results, asked.rtol)
        run.store.run(RecordReproduction(job=JobRef.of(done), reproduction=verdict))

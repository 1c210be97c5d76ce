"""The Submit page: queue an analysis job on one or several datasets from the browser.

The form is generated from the job type's declared options and the limits it has on the chosen
cluster; a request is checked and previewed (its batch script) by the library functions that
check and preview `labctl submit` and its `--dry-run`, and the jobs are queued all or none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from labctl.config import Config
from labctl.config.jobtypes import JobType
from labctl.db import Database
from labctl.errors import (
    ConfigError,
    DuplicateError,
    NotFoundError,
    PermissionDenied,
    ValidationError,
)
from labctl.jobs.declarations import job_types_at
from labctl.jobs.submit import (
    RESOURCE_OPTIONS,
    SPLIT_OPTIONS,
    JobRequest,
    batch_script,
    prepare_job,
    resource_request,
    submit_jobs,
    typed_options,
)
from labctl.web.auth import Principal
from labctl.web.deps import PageUser, state
from labctl.web.render import render

router = APIRouter(include_in_schema=False)
OPTION_PREFIX = "o."  # an option's input is `o.<name>`
REFUSED = (ValidationError, NotFoundError, PermissionDenied, DuplicateError, ConfigError)
SPLIT_HELP = {
    "num_splits": "how many parts to split the job into (a job array)",
    "split_idx": "run only this part (from 0); empty: every part",
}


RESOURCE_HELP = {
    "time": "run time the job asks SLURM for (HH:MM:SS)",
    "mem": "memory the job asks SLURM for (e.g. 8G)",
    "cpus": "CPU cores the job asks SLURM for",
}


@dataclass(frozen=True)
class OptionField:
    """One input of the options: a declared option, a split, or a resource up to a limit."""

    name: str
    type: str
    default: Any
    help: str
    limit: str | int | None = None


@dataclass
class SubmitForm:
    """What was typed, as text, and an error per input (`_form`: about the whole request)."""

    datasets: list[str] = field(default_factory=list)
    job_type: str = ""
    cluster: str = ""
    options: dict[str, str] = field(default_factory=dict)
    datafiles: str = ""
    rawfiles: str = ""
    await_transfer: bool = False
    force: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    def requests(self, user: str) -> list[JobRequest]:
        """A request per dataset; an option left empty takes its default."""
        given = {name: text for name, text in self.options.items() if text}
        return [
            JobRequest(
                dataset=dataset,
                compute_cluster=self.cluster,
                job_type=self.job_type,
                datafiles=self.datafiles.split(),
                datarawfiles=self.rawfiles.split(),
                job_options=given,
                data_transfer_await=self.await_transfer,
                user=user,
            )
            for dataset in self.datasets
        ]


def read_submit_form(posted: FormData) -> SubmitForm:
    def text(name: str) -> str:
        return str(posted.get(name) or "").strip()

    options = {
        key[len(OPTION_PREFIX) :]: str(value).strip()
        for key, value in posted.multi_items()
        if key.startswith(OPTION_PREFIX)
    }
    return SubmitForm(
        datasets=list(dict.fromkeys(text("datasets").split())),
        job_type=text("job_type"),
        cluster=text("compute_cluster"),
        options=options,
        datafiles=text("datafiles"),
        rawfiles=text("rawfiles"),
        await_transfer=bool(posted.get("await_transfer")),
        force=bool(posted.get("force")),
    )


def job_type_on(config: Config, job_type: str, cluster: str) -> JobType | None:
    """The job type as it runs on the cluster; None if either is not known."""
    if cluster not in config.clusters:
        return None
    return job_types_at(config).get(job_type, cluster)


def option_fields(config: Config, spec: JobType, cluster: str) -> list[OptionField]:
    """The inputs the job type takes on `cluster`: its options, its splits, and the resources
    it lets a job ask for (defaulting to what it gets there, up to its `max_resources`)."""
    fields = [OptionField(o, s.type, s.default, s.help) for o, s in spec.options.items()]
    if spec.splittable:
        fields += [OptionField(o, "int", None, SPLIT_HELP[o]) for o in reversed(SPLIT_OPTIONS)]
    gets = spec.resources.over(config.clusters[cluster].resources)
    limits = spec.max_resources
    for key in RESOURCE_OPTIONS if limits else ():
        limit = getattr(limits, key)
        if limit is not None:
            kind = "int" if key == "cpus" else "str"
            fields.append(OptionField(key, kind, getattr(gets, key), RESOURCE_HELP[key], limit))
    return fields


def check_options(form: SubmitForm, spec: JobType, offered: Sequence[OptionField]) -> None:
    """Each option typed and in its limits, checked alone so that its error sits beside it
    (`split_idx` with `num_splits`, which bounds it)."""
    names = {f.name for f in offered}
    for name, text in form.options.items():
        if not text:
            continue
        given = {name: text}
        if name == "split_idx" and form.options.get("num_splits"):
            given["num_splits"] = form.options["num_splits"]
        check: Callable[[str, JobType, dict[str, Any]], Any] = (
            resource_request if name in RESOURCE_OPTIONS else typed_options
        )
        try:
            check(form.job_type, spec, given)
        except ValidationError as exc:
            form.errors[OPTION_PREFIX + name if name in names else "_form"] = str(exc)


def _check_each(
    db: Database, config: Config, requests: Sequence[JobRequest], preview: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """Each request checked as `labctl submit` checks it: the batch scripts (with `preview`)
    and the refusals, per dataset."""
    scripts, refused = {}, {}
    for request in requests:
        try:
            if preview:
                scripts[request.dataset] = batch_script(db, config, request)
            else:
                prepare_job(db, config, request)
        except REFUSED as exc:
            refused[request.dataset] = str(exc)
    return scripts, refused


async def _page(
    request: Request,
    user: Principal,
    form: SubmitForm,
    status: int = 200,
    scripts: dict[str, str] | None = None,
) -> HTMLResponse:
    config = state(request).config
    spec = job_type_on(config, form.job_type, form.cluster)
    return render(
        request,
        "submit.html",
        user,
        status=status,
        form=form,
        job_types=job_types_at(config).names(),
        clusters=list(config.clusters),
        spec=spec,
        fields=option_fields(config, spec, form.cluster) if spec else [],
        scripts=scripts or {},
    )


@router.get("/submit")
async def submit_form(
    request: Request,
    user: PageUser,
    dataset: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
    job_type: str = "",
    cluster: str = "",
) -> HTMLResponse:
    """The form, with the datasets ticked in Browse (or given) filled in."""
    config = state(request).config
    form = SubmitForm(
        datasets=list(dict.fromkeys(dataset)),
        job_type=job_type or next(iter(job_types_at(config).names()), ""),
        cluster=cluster or next(iter(config.clusters), ""),
    )
    return await _page(request, user, form)


@router.get("/submit/options")
async def submit_options(
    request: Request, user: PageUser, job_type: str = "", compute_cluster: str = ""
) -> HTMLResponse:
    """The options of a job type on a cluster alone: htmx swaps them in when either changes."""
    config = state(request).config
    spec = job_type_on(config, job_type, compute_cluster)
    return render(
        request,
        "_submit_options.html",
        user,
        form=SubmitForm(job_type=job_type, cluster=compute_cluster),
        spec=spec,
        fields=option_fields(config, spec, compute_cluster) if spec else [],
    )


@router.post("/submit")
async def submit(request: Request, user: PageUser) -> Response:
    """Preview the batch scripts, or queue the jobs; else show the form again with the errors."""
    web = state(request)
    posted = await request.form()
    form = read_submit_form(posted)
    preview = posted.get("action") == "preview"
    if not form.datasets:
        form.errors["datasets"] = "give one or more datasets"
    spec = job_type_on(web.config, form.job_type, form.cluster)
    if spec is not None:
        check_options(form, spec, option_fields(web.config, spec, form.cluster))
    if form.errors:
        return await _page(request, user, form, status=422)
    config, requests = web.config_of(user), form.requests(user.username)
    scripts, refused = await web.store.run(_check_each, config, requests, preview)
    if refused:
        form.errors["_form"] = "\n".join(f"{d}: {why}" for d, why in refused.items())
    elif not preview:
        try:
            jobs = await web.store.run(submit_jobs, config, requests, force=form.force)
        except REFUSED as exc:
            form.errors["_form"] = str(exc)
        else:
            one = f"/jobs/{jobs[0].job_id}" if len(jobs) == 1 else "/monitor?user=me"
            return RedirectResponse(one, status_code=303)
    status = 422 if form.errors else 200
    return await _page(request, user, form, status, scripts)

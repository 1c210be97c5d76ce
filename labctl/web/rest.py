"""The REST API under /api/v1: experiments (the `labctl query` filter language) and jobs.

Every route takes a bearer token (`labctl user token`) or a session; errors are JSON
`{"detail": ...}` with the status of labctl's typed error (see `labctl.web.problems`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from labctl.access.cancel import bulk_action, cancel_and_stop
from labctl.catalog import Entry
from labctl.catalog.experiments import get_entry, log_entries, query_page
from labctl.catalog.fields import check_field_name
from labctl.catalog.query import build_filter, parse_sort
from labctl.db import Doc, Filter
from labctl.errors import PermissionDenied
from labctl.jobs.actions import retry_job
from labctl.jobs.bulk import FILTER_FIELDS, Action, BulkReport, parse_filter
from labctl.jobs.queue import list_jobs, read_job
from labctl.jobs.rerun import RerunRequest, rerun_job
from labctl.jobs.submit import BatchScript, JobRequest, NewJob, batch_script, submit_jobs
from labctl.jobs.usage import UsageReport, usage_report
from labctl.limits import ANSWER_BYTES, PAGE_ENTRIES, QUERY_TERMS
from labctl.model.job import Job, JobList, store_value
from labctl.stages.heartbeat import Heartbeats, heartbeats
from labctl.web.deps import ApiUser, state


class Error(BaseModel):
    detail: str | list[Any] = Field(description="what went wrong, in one line (or per field)")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Error} for code in codes}


router = APIRouter(prefix="/api/v1", responses=_errors(400, 401, 403, 422))


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewExperiment(_In):
    dataset: str = Field(
        description="acquisition time YYYYMMDD_HHMMSS", examples=["20211215_093527"]
    )
    fields: Entry = Field(
        default_factory=dict,
        description="dotted field names -> values; text is typed by the schema or YAML, as in "
        "`labctl log --set`",
        examples=[{"user": "charlie", "data_raw_path": "/nfs/data/x", "runclass.id": "ARB"}],
    )


class FieldChanges(_In):
    fields: Entry = Field(description="dotted field names -> new values")


class ExperimentQuery(_In):
    filter: Doc = Field(
        default_factory=dict,
        max_length=QUERY_TERMS,
        description="field -> value or {'$gt': value}-style comparisons ($eq $ne $gt $gte $lt "
        "$lte $regex $in), as in labctl.dbquery",
    )
    where: list[str] = Field(
        default_factory=list,
        max_length=QUERY_TERMS,
        description="FIELD OP VALUE conditions, as `--where` (AND)",
    )
    since: str | None = Field(default=None, description="acquired on or after (date)")
    until: str | None = Field(default=None, description="acquired on or before (date)")
    fields: list[str] = Field(
        default_factory=list, max_length=QUERY_TERMS, description="dotted fields; none: all"
    )
    sort: list[str] = Field(
        default_factory=list, max_length=QUERY_TERMS, description="field, or -field: descending"
    )
    limit: int = Field(default=100, ge=1, le=PAGE_ENTRIES)
    skip: int = Field(default=0, ge=0)


class ExperimentBatch(_In):
    entries: list[NewExperiment] = Field(description="stored all together, or none of them")
    update: bool = Field(default=False, description="change existing entries instead of adding")


class Entries(BaseModel):
    items: list[Entry]


class ExperimentPage(BaseModel):
    total: int = Field(description="how many entries match, over all pages")
    items: list[Entry]


class BulkRequest(_In):
    action: Action
    ids: list[str] = Field(default_factory=list, description="named jobs; or else a filter:")
    status: list[str] = Field(default_factory=list, description="job states, e.g. failed")
    reason: list[str] = Field(default_factory=list, description="failure reasons, e.g. timeout")
    user: str | None = Field(default=None, description="a member, or `me`")
    since: str | None = Field(default=None, description="last changed on or after (date)")
    cluster: str | None = None
    job_type: str | None = None
    confirm: bool = Field(default=False, description="false: only list what would be touched")


class Me(BaseModel):
    username: str
    role: str


async def _page(
    request: Request, fields: list[str], filter: Filter, sort: list[str], limit: int, skip: int
) -> ExperimentPage:
    names, order = [check_field_name(f) for f in fields], parse_sort(sort)
    total, items = await state(request).store.run(query_page, names, filter, order, limit, skip)
    return ExperimentPage(total=total, items=items)


@router.get("/me")
async def me(user: ApiUser) -> Me:
    """Who the token or session belongs to."""
    return Me(username=user.username, role=user.role)


@router.get("/experiments")
async def list_experiments(
    request: Request,
    user: ApiUser,
    where: Annotated[list[str], Query(max_length=QUERY_TERMS, description="FIELD OP VALUE")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="acquired on or after (date)")] = None,
    until: Annotated[str | None, Query(description="acquired on or before (date)")] = None,
    fields: Annotated[list[str], Query(max_length=QUERY_TERMS)] = [],  # noqa: B006
    sort: Annotated[list[str], Query(max_length=QUERY_TERMS, description="field, or -field")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=PAGE_ENTRIES)] = 100,
    skip: Annotated[int, Query(ge=0)] = 0,
) -> ExperimentPage:
    """Experiments matching every `where` condition and the acquisition date range."""
    filter = build_filter(where, state(request).config.data, since, until)
    return await _page(request, fields, filter, sort, limit, skip)


@router.post("/experiments/query")
async def query_experiments(
    request: Request, user: ApiUser, body: ExperimentQuery
) -> ExperimentPage:
    """Experiments matching a filter given as a mapping (as `labctl.dbquery` takes it), and
    `where` conditions and a date range as `labctl query` takes them."""
    schema = state(request).config.data
    filter = build_filter(body.where, schema, body.since, body.until, body.filter)
    return await _page(request, body.fields, filter, body.sort, body.limit, body.skip)


@router.get("/experiments/{dataset}", responses=_errors(404))
async def get_experiment(request: Request, user: ApiUser, dataset: str) -> Entry:
    return await state(request).store.run(get_entry, dataset)


@router.post("/experiments", status_code=201, responses=_errors(409))
async def create_experiment(request: Request, user: ApiUser, body: NewExperiment) -> Entry:
    """Log a new experiment; labctl sets acquired_at, created_by/at and updated_by/at."""
    web = state(request)
    [entry] = await web.store.run(
        log_entries, web.config_of(user), [(body.dataset, body.fields)], actor=web.actor_of(user)
    )
    return entry


@router.post("/experiments/batch", responses=_errors(404, 409))
async def log_experiments(request: Request, user: ApiUser, body: ExperimentBatch) -> Entries:
    """Log (or change) several experiments at once, as `labctl log --from-file`: every entry is
    checked before the first is stored."""
    web = state(request)
    entries = [(entry.dataset, entry.fields) for entry in body.entries]
    items = await web.store.run(
        log_entries, web.config_of(user), entries, update=body.update, actor=web.actor_of(user)
    )
    return Entries(items=items)


@router.get("/schema")
async def schema(request: Request, user: ApiUser) -> Doc:
    """The lab's data schema: its fields, their types, which are required (`labctl log`)."""
    return state(request).config.data.model_dump(mode="json")


@router.patch("/experiments/{dataset}", responses=_errors(404))
async def update_experiment(
    request: Request, user: ApiUser, dataset: str, body: FieldChanges
) -> Entry:
    """Change or add fields of an experiment (not labctl's own); sets updated_by/at."""
    web = state(request)
    [entry] = await web.store.run(
        log_entries,
        web.config_of(user),
        [(dataset, body.fields)],
        update=True,
        actor=web.actor_of(user),
    )
    return entry


@router.get("/jobs", response_model=JobList)
async def list_queue(
    request: Request,
    user: ApiUser,
    owner: Annotated[str | None, Query(alias="user", description="a member; `me`: you")] = None,
    status: Annotated[list[str], Query(description="states (repeat, or a,b)")] = [],  # noqa: B006
    reason: Annotated[list[str], Query(description="failure reasons (repeat, or a,b)")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="last changed on or after (date)")] = None,
    cluster: str | None = None,
    job_type: str | None = None,
    dataset: str | None = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_ENTRIES)] = 100,
) -> JSONResponse:
    """Jobs, newest first, filtered as `labctl queue` and the bulk actions filter them."""
    selection = parse_filter(
        user.username,
        status=status,
        reason=reason,
        user=owner,
        since=since,
        cluster=cluster,
        job_type=job_type,
    )
    jobs = await state(request).store.run(
        list_jobs,
        matching=selection.query(),
        dataset=dataset,
        limit=limit,
        max_bytes=ANSWER_BYTES,
    )
    return _as_stored(JobList(items=jobs.items, damaged=jobs.damaged))


def _as_stored(model: BaseModel, status_code: int = 200) -> JSONResponse:
    """A model's JSON as its stored document's (`+00:00` date-times, as before the models):
    the route's declared model still describes it in the OpenAPI schema."""
    return JSONResponse(jsonable_encoder(store_value(model)), status_code)


def _as_caller(user: ApiUser, asked: str | None) -> None:
    """A job the caller queues is theirs: whose it is, the token or session says."""
    if asked not in (None, user.username):
        raise PermissionDenied(f"a job {user.username} queues is {user.username}'s, not {asked}'s")


def _callers(user: ApiUser, body: JobRequest) -> JobRequest:
    """The request as the caller's own job."""
    _as_caller(user, body.user)
    return JobRequest(**body.model_dump(exclude={"user", "force"}), user=user.username)


@router.post("/jobs", status_code=201, response_model=Job, responses=_errors(404, 409))
async def submit(request: Request, user: ApiUser, body: NewJob) -> JSONResponse:
    """Queue an analysis job, checked as `labctl submit` checks it; it is the caller's."""
    web = state(request)
    asked = [_callers(user, body)]
    [job] = await web.store.run(submit_jobs, web.config_of(user), asked, force=body.force)
    return _as_stored(job, 201)


@router.post("/jobs/script", responses=_errors(404))
async def job_script(request: Request, user: ApiUser, body: JobRequest) -> BatchScript:
    """The batch script a job would run, checked as a submission is; nothing is queued."""
    web = state(request)
    script = await web.store.run(batch_script, web.config_of(user), _callers(user, body))
    return BatchScript(batch_script=script)


@router.get("/jobs/{job_id}", response_model=Job, responses=_errors(404))
async def get_one_job(request: Request, user: ApiUser, job_id: str) -> JSONResponse:
    return _as_stored(await state(request).store.run(read_job, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=Job, responses=_errors(404))
async def cancel(request: Request, user: ApiUser, job_id: str) -> JSONResponse:
    """Cancel a job (yours, or any as an admin) and stop it on its cluster at once (or, if the
    cluster cannot be reached, on the watchdog's next run)."""
    web = state(request)
    done = await web.store.run(cancel_and_stop, web.config, job_id, user.username)
    return _as_stored(Job.of(done.job))


@router.post("/jobs/{job_id}/retry", response_model=Job, responses=_errors(404))
async def retry(request: Request, user: ApiUser, job_id: str) -> JSONResponse:
    """Queue a failed or cancelled job again, from the start."""
    return _as_stored(Job.of(await state(request).store.run(retry_job, job_id, user.username)))


@router.post(
    "/jobs/{job_id}/rerun", status_code=201, response_model=Job, responses=_errors(404, 409)
)
async def rerun(request: Request, user: ApiUser, job_id: str, body: RerunRequest) -> JSONResponse:
    """Queue a rerun of a completed job (anyone's) as it was recorded: its commit, options and
    inputs, each input checked against its recorded SHA-256 first. The rerun is the caller's."""
    _as_caller(user, body.user)
    web = state(request)
    asked = body.model_copy(update={"user": user.username})
    job = await web.store.run(rerun_job, web.config_of(user), job_id, asked)
    return _as_stored(job, 201)


@router.post("/jobs/bulk", responses=_errors(403, 422))
async def bulk(request: Request, user: ApiUser, body: BulkRequest) -> BulkReport:
    """Retry or cancel named jobs, or every job a filter selects (as `labctl retry|cancel`):
    without `confirm` only the selection is listed. A member touches only their own jobs."""
    web = state(request)
    wanted = body.model_dump(include=set(FILTER_FIELDS))
    return await web.store.run(
        bulk_action, web.config, body.action, body.ids, wanted, user.username, confirm=body.confirm
    )


@router.get("/watchdog")
async def watchdog(request: Request, user: ApiUser) -> Heartbeats:
    return await state(request).store.run(heartbeats)


@router.get("/usage", response_model_exclude_unset=True)
async def usage(
    request: Request,
    user: ApiUser,
    by: Annotated[list[str], Query(description="user, job-type, cluster or month")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="tasks ended on or after (date)")] = None,
) -> UsageReport:
    """Where the lab's compute time went, as `labctl usage` reports it. Every member sees the
    whole lab's figures."""
    return await state(request).store.run(usage_report, by, since)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, user: ApiUser) -> Doc:
    """This API's OpenAPI document (behind the login like everything else)."""
    document: Doc = request.app.openapi()
    return document

"""The `jobs` stage's last step: tell this member of their jobs' events, each at most once.

Each event is recorded on its job when it happens (`labctl.jobs.queue`). Here a due notice is
claimed (an owner and a lease: an overlapping run skips it), sent, and then marked sent; every
channel that took it is marked at once, and one that failed is tried again later with a
doubling backoff. The one window is between a server taking a message and the mark that
follows it (a run killed there): the notice's lease then expires and the message is sent again,
with the same Message-ID (and webhook `Idempotency-Key`), so the copy is recognisable. A run
killed before the server took it loses nothing: the next run after the lease sends it once.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from labctl.clock import utcnow
from labctl.config.notifyconfig import Recipient
from labctl.errors import NotFoundError
from labctl.jobs.noticeboard import NoticeChange
from labctl.jobs.work import Work
from labctl.model.job import Job, NoticeEvent, NoticeState
from labctl.model.states import JobState
from labctl.notify.channels import Channel, channels
from labctl.notify.messages import WAITS, Event, message
from labctl.notify.webhook import DeliveryError
from labctl.stages import StageRun
from labctl.stages.memberops import HowNotified
from labctl.stages.ops import ClaimNotice, Read, RescheduleNotices, SettleNotice


def next_digest(now: dt.datetime, hour: int) -> dt.datetime:
    """The next `hour` o'clock, this machine's local time, after `now`."""
    local = now.astimezone()
    at = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    return at if at > local else at + dt.timedelta(days=1)


def send_notices(run: StageRun) -> None:
    """Send this member's due notices: each job's on its own, those waiting for one session
    together, and in digest mode one message a day with the day's events."""
    now = utcnow()
    jobs = run.find(Work.NOTICE_DUE)
    if not jobs:
        return
    how = run.store.run(HowNotified())
    who = Recipient(run.store.member, how.email or run.config.email, how.mode, how.webhook)
    ways = channels(run.config.notify, who)
    groups: dict[str, list[Event]] = defaultdict(list)
    for job in jobs:
        for key, notice in job.notices.items():
            if notice.state not in (NoticeState.NEW, NoticeState.SENDING):
                continue
            why_not = _skip(job, notice.event, who, ways)
            if why_not:
                skipped = NoticeChange(note=why_not)
                if _settle(run, job.job_id, key, NoticeState.SKIPPED, skipped) and ways:
                    run.did["notices skipped"] += 1  # (not counted where nothing is set up)
            elif job.follow_up_pending and notice.event is NoticeEvent.COMPLETED:
                continue  # its merge job is still to queue, and tells of both
            elif who.mode == "digest" and notice.event not in WAITS:
                if notice.digest:
                    groups["digest"].append(_event(run, job, key))
                else:
                    at = next_digest(now, run.config.notify.digest_hour)
                    held = NoticeChange(digest=True, next_try_at=at)
                    _settle(run, job.job_id, key, NoticeState.NEW, held)
            elif notice.event in WAITS:  # told at once, one message per cluster
                groups[f"{notice.event} {notice.cluster}"].append(_event(run, job, key))
            else:
                groups[f"job {job.job_id} {key}"].append(_event(run, job, key))
    for name, events in groups.items():
        told = _told_of_session(run, events) if events[0].kind in WAITS else None
        if told is None:
            deliver(run, events, ways, digest=name == "digest")
            continue
        for event in events:
            skipped = NoticeChange(note=f"told with {told}")
            _settle(run, event.job.job_id, event.key, NoticeState.SKIPPED, skipped)
    for job in jobs:
        run.store.run(RescheduleNotices(job_id=job.job_id))


def _settle(run: StageRun, job_id: str, key: str, state: NoticeState, change: NoticeChange) -> bool:
    """Claim a due notice (or one a stopped run held) and settle it at once, unsent."""
    held = claim(run, job_id, key)
    return held is not None and settle(run, job_id, key, state, change)


def claim(run: StageRun, job_id: str, key: str) -> Job | None:
    """Take a due notice (or one a stopped run held); the job as it is then, or None."""
    lease = run.lease.total_seconds()
    return run.store.run(ClaimNotice(job_id=job_id, key=key, owner=run.owner, lease_s=lease))


def settle(run: StageRun, job_id: str, key: str, state: NoticeState, change: NoticeChange) -> bool:
    """Settle a notice this run holds (see `labctl.jobs.noticeboard.settle_notice`)."""
    settled = SettleNotice(job_id=job_id, key=key, owner=run.owner, state=state, change=change)
    return run.store.run(settled)


def _skip(job: Job, event: NoticeEvent, who: Recipient, ways: list[Channel]) -> str:
    """Why this notice is not to be sent at all ("" if it is)."""
    if not ways:
        return "no e-mail address with an SMTP server, and no webhook"
    if event is NoticeEvent.FAILED and job.status is not JobState.FAILED:
        return "retried before it was told"
    if event in WAITS and not job.waiting:
        return "the job went on before it was told"
    if event is NoticeEvent.COMPLETED and job.follow_up_job:
        return f"told with its merge job {job.follow_up_job}"
    if event is NoticeEvent.COMPLETED and who.mode == "failures":
        return "the member asked to hear of failures only"
    return ""


def _told_of_session(run: StageRun, events: list[Event]) -> str | None:
    """Another job of this member that still waits for the same session (or outage) and was
    told of it: one message per session that went down (or outage), whatever joins the wait
    later."""
    waiting, kind = events[0].job.waiting, events[0].kind
    ids = [e.job.job_id for e in events]
    for job in run.find(Work.WAITING, waiting=waiting, exclude=ids):
        sessions = [n for n in job.notices.values() if n.event is kind]
        if sessions and max(sessions, key=lambda n: n.at).state is NoticeState.SENT:
            return job.job_id
    return None


def _event(run: StageRun, job: Job, key: str) -> Event:
    parent = None
    if job.parent_job and job.notices[key].event is NoticeEvent.COMPLETED:
        try:
            parent = run.store.run(Read(job_id=job.parent_job))
        except NotFoundError:
            parent = None
    return Event(job, key, parent)


def deliver(run: StageRun, events: list[Event], ways: list[Channel], *, digest: bool) -> None:
    """Claim the events' notices, send one message of those claimed through every channel that
    has not taken it yet, and mark them sent, or due again after a backoff."""
    claimed = []
    for event in events:
        job = claim(run, event.job.job_id, event.key)
        if job is not None:
            claimed.append(Event(job, event.key, event.parent))
    if not claimed:
        return
    text = message(claimed, digest=digest)
    errors = []
    for way in ways:
        if all(way.name in e.job.notices[e.key].delivered for e in claimed):
            continue  # taken on an earlier attempt
        try:
            way.send(text)
        except DeliveryError as exc:
            errors.append(str(exc))
            continue
        for e in claimed:
            took = NoticeChange(delivered=[way.name])
            settle(run, e.job.job_id, e.key, NoticeState.SENDING, took)
    now = utcnow()
    settings = run.config.notify
    for e in claimed:
        notice = e.job.notices[e.key]
        if not errors:
            settle(run, e.job.job_id, e.key, NoticeState.SENT, NoticeChange(sent_at=now, error=""))
            continue
        delay = min(settings.backoff_seconds * 2**notice.attempts, settings.max_backoff_seconds)
        again = NoticeChange(
            attempts=notice.attempts + 1,
            error="; ".join(errors),
            next_try_at=now + dt.timedelta(seconds=delay),
        )
        settle(run, e.job.job_id, e.key, NoticeState.NEW, again)
    if errors:
        run.notes.append(f"notify: {'; '.join(errors)}; retried later")
        run.did["notices to retry"] += len(claimed)
    else:
        run.did["notices sent"] += len(claimed)

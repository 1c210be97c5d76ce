"""End to end in a real headless Chromium (Debian's, driven by Playwright; no browser download).

A member logs in, adds an experiment through the form, finds it in Browse, submits a job through
the API and watches the monitor follow its progress without a reload; another member reads the
lab's usage charts; another retries two failed jobs at once from the job list; another submits
jobs on two datasets ticked in Browse through the Submit page; every page fits a 420 px screen.
Screenshots of every page go to $LABCTL_SCREENSHOTS (docs/screenshots to refresh the ones in the
repository), else tmp_path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from labctl.config import Config, DatabaseConfig
from labctl.db import Database, connect
from labctl.jobs.queue import get_job, read_job, transition
from labctl.model.states import FailureReason, JobState
from labctl.stages.heartbeat import beat
from labctl.users import create_token
from tests.jobfixtures import DATASET as FIXTURE_DATASET
from tests.jobfixtures import dataset_with_files, job_in_state, transfer_record
from tests.usagefixtures import LAB, seed_usage
from tests.webfixtures import password, seed, served, web_config

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DATASET = "20240105_101500"
OTHER = "20211216_100000"  # a second dataset with files, beside the fixtures' one

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium (scripts/test.sh installs it as root)",
    ),
]
sync_api = pytest.importorskip("playwright.sync_api")

HOST = socket.gethostname()


def site_config(tmp_path: Path) -> Config:
    """The config `site` serves with: an embedded store under tmp_path."""
    base = Config(user="tester", database=DatabaseConfig(uri="embedded", path=tmp_path / "store"))
    return web_config(base, tmp_path)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Database]]:
    """The dashboard served on a free port over an embedded store, and that store."""
    cfg = site_config(tmp_path)
    with connect(cfg.database) as db, served(cfg) as url:
        seed(db, cfg, tmp_path)
        yield url, db


@pytest.fixture
def page(tmp_path: Path) -> Iterator[sync_api.Page]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        problems: list[str] = []
        # HTTP errors the test provokes (401, 422) are logged as failed loads: not problems.
        page.on(
            "console",
            lambda m: (
                problems.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        yield page
        browser.close()
        assert not problems, f"the browser reported errors: {problems}"


def test_log_in_add_browse_submit_and_watch_the_job(
    site: tuple[str, Database], page: sync_api.Page, tmp_path: Path
) -> None:
    url, db = site
    expect = sync_api.expect
    shots = Path(os.environ.get("LABCTL_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    raw = f"/nfs/rig2/alice/{DATASET}"  # not there yet: the job waits for data_complete

    # 1. Every page asks for a login first; a wrong password is said so.
    page.goto(url + "/monitor")
    expect(page).to_have_url(url + "/login?next=/monitor")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "not her password")
    page.click("button:has-text('Log in')")
    expect(page.locator("p.error")).to_have_text("wrong username or password")
    page.fill("input[name=username]", "alice")
    page.screenshot(path=shots / "login.png")
    page.fill("input[name=password]", password("alice"))
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(url + "/monitor")

    # 2. Add: a bad free field name is shown beside its row and nothing is stored; then fixed.
    page.click("nav >> text=Add")
    page.fill("#dataset", DATASET)
    page.fill("[name='f.user']", "alice")
    page.fill("[name='f.data_raw_path']", raw)
    page.fill("[name='f.n_planes']", "12")
    page.fill("[name='f.runclass.id']", "ARB-diff")
    page.select_option("[name='f.data_complete']", "true")
    page.locator("[name=extra_key]").nth(0).fill("stim contrast")
    page.locator("[name=extra_value]").nth(0).fill("0.5")
    page.click("button:has-text('+ another field')")
    expect(page.locator("[name=extra_key]")).to_have_count(4)
    page.locator("[name=extra_key]").nth(1).fill("comment")
    page.locator("[name=extra_value]").nth(1).fill("first session")
    page.click("button:has-text('Store')")
    expect(page.locator(".extra.invalid .error")).to_contain_text("dotted identifiers")
    expect(page.locator("[name='f.n_planes']")).to_have_value("12")
    page.screenshot(path=shots / "add.png", full_page=True)
    assert db.data.count({"dataset": DATASET}) == 0
    page.locator("[name=extra_key]").nth(0).fill("stim.contrast")
    page.click("button:has-text('Store')")
    expect(page).to_have_url(f"{url}/entry/{DATASET}?created=1")
    expect(page.locator("p.ok")).to_have_text("Stored.")

    # 3. Browse: found by a --where condition and the user filter.
    page.click("nav >> text=Browse")
    page.fill("textarea[name=where]", "n_planes>=10\nstim.contrast<1")
    page.fill("input[name=user]", "alice")
    page.click("button:has-text('Search')")
    expect(page.locator("table.grid tbody tr")).to_have_count(1)
    expect(page.locator("table.grid tbody")).to_contain_text(DATASET)
    page.click("summary:has-text('Columns')")
    page.check("input[name=col][value='stim.contrast']")
    page.uncheck("input[name=col][value='session_date']")
    page.click("button:has-text('Search')")
    expect(page.locator("table.grid thead")).to_contain_text("stim.contrast")
    expect(page.locator("table.grid thead")).not_to_contain_text("session_date")
    page.screenshot(path=shots / "browse.png", full_page=True)

    # 4. A job submitted through the REST API with alice's token.
    beat(db, "scan", {"started": 1}, "alice", HOST)
    beat(db, "transfers", {"progress": 1}, "alice", HOST)
    headers = {"Authorization": f"Bearer {create_token(db, 'alice')}"}
    body = {"dataset": DATASET, "compute_cluster": "local", "job_type": "file_stats"}
    body |= {"datarawfiles": ["fl_a.roli"], "data_transfer_await": True}
    answer = httpx2.post(f"{url}/api/v1/jobs", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["job_id"]

    # 5. Monitor: the row follows the job's transfer without reloading the page.
    page.click("nav >> text=Monitor")
    row = page.locator(f"#job-{job_id}")
    expect(row).to_contain_text("queued")
    page.evaluate("window.stillTheSamePage = true")
    _transfer(db, job_id, 25, first=True)
    expect(row.locator(".pct")).to_have_text("25%", timeout=10_000)
    expect(row).to_contain_text("transferring")
    _transfer(db, job_id, 75)
    expect(row.locator(".pct")).to_have_text("75%", timeout=10_000)
    expect(row).to_contain_text("ETA 0:01:40")
    assert page.evaluate("window.stillTheSamePage") is True
    page.screenshot(path=shots / "monitor.png", full_page=True)

    # 6. The job page: its history, live state, SLURM id; the owner cancels it.
    row.locator(f"a:has-text('{job_id}')").click()
    expect(page).to_have_url(f"{url}/jobs/{job_id}")
    _transfer(db, job_id, 100)
    job = read_job(db, job_id)
    scheduler = {"scheduler": {"job_id": "4711", "state": "RUNNING"}}
    transition(db, job, JobState.SUBMITTED, "sbatch accepted 4711", fields=scheduler)
    expect(page.locator("#live")).to_contain_text("4711 RUNNING", timeout=10_000)
    expect(page.locator("#live")).to_contain_text("sbatch accepted 4711")
    page.screenshot(path=shots / "job.png", full_page=True)
    page.click("button:has-text('Cancel')")
    expect(page.locator("#live .state")).to_have_text("cancelled")
    assert get_job(db, job_id)["status"] == "cancelled"

    # 7. The entry page lists the job; editing a field records who changed it.
    page.click(f"a:has-text('{DATASET}')")
    expect(page.locator("section", has_text="Jobs")).to_contain_text(job_id)
    page.fill("[name='f.comment']", "first session, re-checked")
    page.click("button:has-text('Save')")
    expect(page.locator("p.ok")).to_have_text("Saved 1 field(s).")
    page.screenshot(path=shots / "entry.png", full_page=True)
    entry = db.data.find_one({"dataset": DATASET})
    assert entry and entry["comment"] == "first session, re-checked"
    assert entry["updated_by"] == "alice"


CHART_DATA = """(id) => {
    const chart = Chart.getChart(document.getElementById(id));
    return {labels: chart.data.labels,
            sets: chart.data.datasets.map((s) => [s.label, s.data, s.backgroundColor])};
}"""
PAINTED = """(id) => {
    const canvas = document.getElementById(id);
    const area = Chart.getChart(canvas).chartArea;  // the plot, without legend and axes
    const ratio = window.devicePixelRatio;
    const [x, y] = [Math.ceil(area.left * ratio), Math.ceil(area.top * ratio)];
    const [w, h] = [Math.floor(area.width * ratio), Math.floor(area.height * ratio)];
    const pixels = canvas.getContext("2d").getImageData(x, y, w, h).data;
    const colours = {};
    for (let i = 0; i < pixels.length; i += 4) {
        if (pixels[i + 3] === 255) {
            const rgb = [0, 1, 2].map((c) => pixels[i + c].toString(16).padStart(2, "0"));
            const hex = "#" + rgb.join("");
            colours[hex] = (colours[hex] || 0) + 1;
        }
    }
    return colours;
}"""


def test_the_usage_page_charts_the_lab_s_compute_time(
    site: tuple[str, Database], page: sync_api.Page, tmp_path: Path
) -> None:
    url, db = site
    seed_usage(db)
    expect = sync_api.expect
    shots = Path(os.environ.get("LABCTL_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(url + "/usage")
    page.fill("input[name=username]", "bob")  # a member, not an admin: sees the whole lab
    page.fill("input[name=password]", password("bob"))
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(url + "/usage")
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Usage")
    expect(page.locator("#usage")).to_have_attribute("data-drawn", "true")

    months = page.evaluate(CHART_DATA, "chart-cpu-hours")
    assert months["labels"] == ["2026-10", "2026-11"]
    assert [s[:2] for s in months["sets"]] == [
        ["alice", [20, 8]],
        ["bob", [0.5, 2]],
        ["root", [0, 48]],
    ]
    waits = page.evaluate(CHART_DATA, "chart-queue-wait")
    assert waits["labels"] == ["local", "raven", "viper"]
    assert waits["sets"][0][1] == [1.5, 25, 240]  # minutes
    cpu = page.evaluate(CHART_DATA, "chart-cpu-efficiency")
    assert [s[:2] for s in cpu["sets"]] == [
        ["diff_registration", [0, 0, 0, 0, 0, 3, 0, 0, 1, 0]],
        ["file_stats", [0, 0, 1, 0, 0, 0, 0, 0, 0, 1]],
        ["merge_splits", [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]],
    ]
    memory = page.evaluate(CHART_DATA, "chart-memory-efficiency")
    assert memory["sets"][1][1] == [0] * 10  # file_stats: its cluster records no MaxRSS
    # Drawn, not just configured: each bar's colour fills solid pixels of the plot.
    charts = {"cpu-hours": months, "queue-wait": waits, "cpu-efficiency": cpu}
    for name, chart in charts.items():
        painted = page.evaluate(PAINTED, f"chart-{name}")
        assert all(painted.get(colour, 0) > 50 for _, _, colour in chart["sets"]), name
    painted = page.evaluate(PAINTED, "chart-memory-efficiency")
    assert [painted.get(colour, 0) > 50 for _, _, colour in memory["sets"]] == [True, False, True]
    page.screenshot(path=shots / "usage.png", full_page=True)

    page.goto(url + "/usage?since=someday")
    expect(page.locator("p.error").first).to_contain_text("since takes a date like 2021-12-15")


def test_the_usage_page_charts_the_good_jobs_and_lists_a_damaged_one(
    site: tuple[str, Database], page: sync_api.Page
) -> None:
    url, db = site
    seed_usage(db)
    db.archive.insert({**LAB[0].doc(), "_id": "j-bad", "job_id": "j-bad", "usage": ["abc"]})
    page.goto(url + "/usage")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", password("bob"))
    page.click("button:has-text('Log in')")
    sync_api.expect(page.locator("#usage")).to_have_attribute("data-drawn", "true")
    assert page.evaluate(CHART_DATA, "chart-cpu-hours")["labels"] == ["2026-10", "2026-11"]
    damaged = page.locator("#usage-damaged li")
    sync_api.expect(damaged).to_have_count(1)
    sync_api.expect(damaged).to_have_text(
        re.compile(
            r"^damaged job j-bad: usage\.0: Input should be a valid dictionary.*: not counted$"
        )
    )
    assert page.locator("#usage-error").is_hidden()


def _transfer(db: Database, job_id: str, percent: int, first: bool = False) -> None:
    """What the watchdog's transfer stages record, at `percent` of 5 kB."""
    progress = {
        "bytes": 50 * percent,
        "total": 5000,
        "percent": percent,
        "rate": "1.00kB/s",
        "eta_seconds": (100 - percent) * 4,
    }
    if first:
        transition(
            db,
            read_job(db, job_id),
            JobState.TRANSFERRING,
            "rsync started",
            fields={"transfer": transfer_record(**progress)},
        )
    else:
        db.queue.update(
            {"job_id": job_id}, {"$set": {f"transfer.{k}": v for k, v in progress.items()}}
        )


def test_retry_two_failed_jobs_from_the_job_list(
    site: tuple[str, Database], page: sync_api.Page, tmp_path: Path
) -> None:
    """Filter the list to failed jobs, tick all shown (alice's two: bob's has no box), keep the
    ticks through the list's live updates, confirm on the page that lists them, see them queued."""
    url, db = site
    expect = sync_api.expect
    shots = Path(os.environ.get("LABCTL_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    cfg = site_config(tmp_path)
    failed = [job_in_state(db, cfg, JobState.FAILED) for _ in range(2)]
    oom = job_in_state(db, cfg, JobState.FAILED, reason=FailureReason.OUT_OF_MEMORY)
    bobs = job_in_state(db, cfg, JobState.FAILED, user="bob")
    page.goto(url + "/monitor?status=failed&reason=timeout")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", password("alice"))
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(url + "/monitor?status=failed&reason=timeout")
    expect(page.locator("#queue tbody tr")).to_have_count(3)
    expect(page.locator(f"#job-{oom}")).to_have_count(0)
    expect(page.locator(f"#job-{bobs} input[name=job]")).to_have_count(0)
    page.check("#pick-all")
    for job_id in failed:
        expect(page.locator(f"#pick-{job_id}")).to_be_checked()
    with page.expect_response(lambda r: "/monitor/live" in r.url):  # a live update comes
        pass
    page.wait_for_timeout(300)
    for job_id in failed:
        expect(page.locator(f"#pick-{job_id}")).to_be_checked()
    page.click("#bulk button:has-text('Retry')")
    expect(page).to_have_url(re.compile(r"/monitor/confirm\?action=retry&job=j"))
    expect(page.locator("h1")).to_have_text("Retry 2 job(s)?")
    confirm = page.locator("table.confirm tbody tr")
    expect(confirm).to_have_count(2)
    for job_id in failed:
        expect(page.locator(f"#pick-{job_id}")).to_contain_text("failed")
    assert {get_job(db, job_id)["status"] for job_id in failed} == {"failed"}
    page.screenshot(path=shots / "bulk-confirm.png", full_page=True)
    page.click("button:has-text('Retry 2 job(s)')")
    expect(page.locator("#summary")).to_have_text("requeued 2 job(s)")
    assert {get_job(db, job_id)["status"] for job_id in failed} == {"queued"}
    assert get_job(db, bobs)["status"] == "failed" and get_job(db, oom)["status"] == "failed"
    page.click("a:has-text('Back to the jobs')")
    for job_id in failed:
        expect(page.locator(f"#job-{job_id} .state")).to_have_text("queued")


def test_a_job_id_with_a_quote_does_not_stop_the_monitor(
    site: tuple[str, Database], page: sync_api.Page, tmp_path: Path
) -> None:
    """A job stored with an odd id (a member with the database's credentials can write any) is
    listed, and the monitor's live updates go on for everyone: element ids stay selector-safe."""
    url, db = site
    expect = sync_api.expect
    cfg = site_config(tmp_path)
    odd = get_job(db, job_in_state(db, cfg, JobState.FAILED))
    db.queue.delete({"job_id": odd["job_id"]})
    db.queue.insert({**odd, "_id": "j'q\"x", "job_id": "j'q\"x"})
    _log_in(page, url, "/monitor", "alice")
    expect(page.locator("#queue tbody tr")).to_have_count(1)
    box = page.get_by_label("select j'q\"x")
    box.check()
    for _ in range(2):
        with page.expect_response(lambda r: "/monitor/live" in r.url):
            pass
    later = job_in_state(db, cfg, JobState.FAILED)
    expect(page.locator(f"#job-{later}")).to_have_count(1)
    expect(box).to_be_checked()  # kept through the updates (hx-preserve found it)


def _derived(db: Database, cfg: Config) -> dict[str, str]:
    """A split run, its merge and a summary on the fixtures' dataset, with recorded checksums."""
    sha = {name: hashlib.sha256(name.encode()).hexdigest() for name in
           ("stack", "shard0", "shard1", "merged", "summary")}  # fmt: skip

    def record(job_id: str, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]],
               **more: Any) -> None:  # fmt: skip
        changes = {
            "status": "completed",
            "input_checksums": [{"name": n, "size": 1000, "sha256": sha[k]} for n, k in inputs],
            "results": [
                {"name": n, "path": f"/r/{n}", "size": 2000, "sha256": sha[k]} for n, k in outputs
            ],
            **more,
        }
        db.queue.update({"job_id": job_id}, {"$set": changes})

    ids = {name: job_in_state(db, cfg) for name in ("array", "merge", "summary")}
    record(ids["array"], [("raw/stack.h5", "stack")],
           [("registration_0.h5", "shard0"), ("registration_1.h5", "shard1")])  # fmt: skip
    record(ids["merge"], [("data/results/registration_0.h5", "shard0"),
                          ("data/results/registration_1.h5", "shard1")],
           [("registration.h5", "merged")], parent_job=ids["array"])  # fmt: skip
    record(ids["summary"], [("raw/stack.h5", "stack")], [("summary_stats.h5", "summary")])
    return ids


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Debian's graphviz")
def test_the_dataset_page_draws_its_lineage(
    site: tuple[str, Database], page: sync_api.Page, tmp_path: Path
) -> None:
    url, db = site
    shots = Path(os.environ.get("LABCTL_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    ids = _derived(db, site_config(tmp_path))
    _log_in(page, url, f"/entry/{FIXTURE_DATASET}", "alice")
    picture = page.locator("#lineage img")
    sync_api.expect(picture).to_have_count(1)
    picture.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=picture.element_handle()
    )
    svg = page.request.get(f"{url}/entry/{FIXTURE_DATASET}/lineage.svg")
    assert svg.headers["content-type"] == "image/svg+xml"
    for text in [*ids.values(), "raw/stack.h5", "registration.h5", "summary_stats.h5"]:
        assert text in svg.text()
    page.locator("#lineage").screenshot(path=shots / "lineage.png")


def _log_in(page: sync_api.Page, url: str, path: str, username: str) -> None:
    page.goto(url + path)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password(username))
    page.click("button:has-text('Log in')")
    sync_api.expect(page).to_have_url(url + path)


def test_submit_jobs_on_datasets_ticked_in_browse(
    site: tuple[str, Database], page: sync_api.Page, tmp_path: Path
) -> None:
    """Tick two entries in Browse, go to Submit with them filled in; the options follow the job
    type chosen; the preview shows each dataset's batch script; a refusal keeps what was typed;
    then both jobs are queued and listed as the member's."""
    url, db = site
    expect = sync_api.expect
    shots = Path(os.environ.get("LABCTL_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    dataset_with_files(db, site_config(tmp_path), tmp_path / "other", OTHER)
    _log_in(page, url, "/browse", "alice")
    page.check(f"input[name=dataset][value='{FIXTURE_DATASET}']")
    page.check(f"input[name=dataset][value='{OTHER}']")
    page.click("button:has-text('Submit a job')")
    expect(page).to_have_url(re.compile(r"/submit\?dataset=\d{8}_\d{6}&dataset="))
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Submit")
    expect(page.locator("#datasets")).to_have_value(f"{OTHER}\n{FIXTURE_DATASET}")

    page.select_option("#job_type", "diff_registration")
    expect(page.locator("#o-mem")).to_have_attribute("placeholder", re.compile(r"\d+G"))
    expect(page.locator("#options")).to_contain_text("up to 64G")
    page.select_option("#job_type", "file_stats")
    expect(page.locator("#o-sleep_seconds")).to_be_visible()
    expect(page.locator("#o-mem")).to_have_count(0)
    page.fill("#o-sleep_seconds", "1.5")
    page.fill("#rawfiles", "fl_a.roli")
    page.click("button:has-text('Preview batch script')")
    scripts = page.locator("section.preview pre")
    expect(scripts).to_have_count(2)
    for script in scripts.all():
        expect(script).to_contain_text("python3 -m pipelines run file_stats")
        expect(script).to_contain_text('"sleep_seconds": 1.5')
    expect(page.locator("#o-sleep_seconds")).to_have_value("1.5")
    page.screenshot(path=shots / "submit.png", full_page=True)
    assert db.queue.count() == 0

    page.fill("#rawfiles", "fl_a.roli\nmissing.roli")
    page.click("button:has-text('Submit')")
    expect(page.locator("#refused li")).to_have_count(2)
    expect(page.locator("#refused")).to_contain_text(f"{OTHER}: input file 'missing.roli'")
    expect(page.locator("#rawfiles")).to_have_value("fl_a.roli\nmissing.roli")
    expect(page.locator("#job_type")).to_have_value("file_stats")
    assert db.queue.count() == 0

    page.fill("#rawfiles", "fl_a.roli")
    page.click("button:has-text('Submit')")
    expect(page).to_have_url(url + "/monitor?user=me")
    expect(page.locator("#queue tbody tr")).to_have_count(2)
    jobs = db.queue.find({})
    assert sorted(j["dataset"] for j in jobs) == [FIXTURE_DATASET, OTHER]
    assert {(j["user"], j["job_options"]["sleep_seconds"]) for j in jobs} == {("alice", 1.5)}


NARROW = 420
NO_OVERFLOW = "document.documentElement.scrollWidth <= window.innerWidth"


def test_every_page_fits_a_420_px_screen(
    site: tuple[str, Database], page: sync_api.Page, tmp_path: Path
) -> None:
    """At 420 px the header wraps and wide tables scroll inside their box: the page itself never
    scrolls sideways."""
    url, db = site
    shots = Path(os.environ.get("LABCTL_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    cfg = site_config(tmp_path)
    job_id = job_in_state(db, cfg, JobState.FAILED)
    seed_usage(db)
    beat(db, "scan", {"started": 1}, "alice", HOST)
    page.set_viewport_size({"width": NARROW, "height": 800})
    _log_in(page, url, "/browse", "alice")
    paths = ["/browse", "/add", f"/submit?dataset={FIXTURE_DATASET}", "/monitor", "/usage"]
    paths += [
        f"/entry/{FIXTURE_DATASET}",
        f"/jobs/{job_id}",
        f"/monitor/confirm?action=retry&job={job_id}",
    ]
    overflowing = []
    for path in paths:
        page.goto(url + path)
        page.wait_for_load_state("load")
        if not page.evaluate(NO_OVERFLOW):
            overflowing.append((path, page.evaluate("document.documentElement.scrollWidth")))
    assert overflowing == []
    table = page.locator(".scroll").first  # the confirmation's table: wider than the screen
    assert table.evaluate("box => box.scrollWidth > box.clientWidth")
    for name, path in (("narrow-browse", "/browse"), ("narrow-monitor", "/monitor")):
        page.goto(url + path)
        page.screenshot(path=shots / f"{name}.png", full_page=True)
    page.set_viewport_size({"width": 1000, "height": 800})
    page.goto(f"{url}/entry/{FIXTURE_DATASET}")
    timeline = page.locator("#timeline")
    sync_api.expect(timeline.locator("svg.bar rect")).not_to_have_count(0)
    assert timeline.locator("svg.bar").first.bounding_box()["width"] > 100  # drawn, not empty
    timeline.screenshot(path=shots / "timeline.png")

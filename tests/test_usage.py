"""Usage reports: the aggregation, `labctl usage`, `labctl status`'s efficiency line and the
REST endpoint, over the jobs of tests/usagefixtures.py, on both backends."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from labctl.cli import cli
from labctl.config import Config
from labctl.db import Database
from labctl.errors import ValidationError
from labctl.jobs.queue import add_job
from labctl.jobs.usage import bins, describe, memory_text, usage_report
from labctl.model.job import TaskUsage
from labctl.users import create_token
from labctl.web import create_app
from tests.usagefixtures import LAB, finished_job, seed_usage
from tests.webfixtures import login, seed, web_config


@pytest.fixture
def lab(db: Database) -> Database:
    seed_usage(db)
    return db


def groups(db: Database, *by: str, since: str | None = None) -> dict[Any, dict[str, Any]]:
    report = usage_report(db, by, since).model_dump(exclude_unset=True)
    keys = [k for k in ("user", "job_type", "cluster", "month") if k in report["groups"][0]]
    return {tuple(g[k] for k in keys) if len(keys) > 1 else g[keys[0]]: g for g in report["groups"]}


def test_per_user_hours_waits_and_efficiencies(lab: Database) -> None:
    by_user = groups(lab)  # by user unless told
    alice, bob, root = by_user["alice"], by_user["bob"], by_user["root"]
    assert list(by_user) == ["alice", "bob", "root"]
    # alice: 8 cores x 2 h, then 3 tasks of 4 cores x 1 h; waits 30, 10, 20, 60 minutes
    assert (alice["jobs"], alice["tasks"]) == (2, 4)
    assert alice["cpu_hours"] == pytest.approx(28)
    assert alice["wall_hours"] == pytest.approx(5)
    assert alice["median_wait_s"] == pytest.approx(25 * 60)
    assert alice["cpu_efficiency"] == pytest.approx((16 * 0.85 + 12 * 0.5) / 28)
    assert alice["memory_efficiency"] == pytest.approx((4 + 3 * 8) / (64 + 3 * 16))
    # bob's cluster records no MaxRSS: unknown, not 0; an even count's median is the mean
    assert bob["memory_efficiency"] is None
    assert bob["median_wait_s"] == pytest.approx(90)
    assert bob["cpu_efficiency"] == pytest.approx((0.5 * 0.95 + 2 * 0.25) / 2.5)
    assert root["cpu_hours"] == pytest.approx(48)
    assert root["memory_efficiency"] == pytest.approx(100 / 128)


def test_months_split_at_midnight_utc_and_count_each_task_once(lab: Database) -> None:
    by_month = groups(lab, "month")
    assert list(by_month) == ["2026-10", "2026-11"]
    october, november = by_month["2026-10"], by_month["2026-11"]
    # j-a2's first task ended in October, its others in November: the job counts in both
    assert (october["jobs"], october["tasks"], october["cpu_hours"]) == (3, 3, 20.5)
    assert (november["jobs"], november["tasks"], november["cpu_hours"]) == (3, 4, 58)
    per = groups(lab, "month", "user")
    assert per[("bob", "2026-10")]["cpu_hours"] == 0.5  # ended 23:30 on 31 October
    assert per[("bob", "2026-11")]["cpu_hours"] == 2  # ended 00:10 on 1 November
    assert sum(g["tasks"] for g in per.values()) == 7


def test_since_keeps_the_tasks_that_ended_from_that_day(lab: Database) -> None:
    report = usage_report(lab, ["cluster"], "2026-11-01").model_dump(exclude_unset=True)
    assert report["since"] == "2026-11-01T00:00:00+00:00"
    by_cluster = {g["cluster"]: g for g in report["groups"]}
    assert by_cluster["raven"]["tasks"] == 2  # of j-a2's three
    assert by_cluster["local"]["tasks"] == 1
    assert sum(g["cpu_hours"] for g in report["groups"]) == pytest.approx(58)
    assert usage_report(lab, [], "2027-01-01").groups == []


def test_efficiency_distribution_per_job_type(lab: Database) -> None:
    by_type = groups(lab, "job-type")
    registration = by_type["diff_registration"]
    assert registration["cpu_efficiency_bins"] == [0, 0, 0, 0, 0, 3, 0, 0, 1, 0]
    assert registration["memory_efficiency_bins"] == [1, 0, 0, 0, 0, 3, 0, 0, 0, 0]
    assert by_type["file_stats"]["cpu_efficiency_bins"] == [0, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert by_type["file_stats"]["memory_efficiency_bins"] == [0] * 10
    assert bins([1.3, 0.999, 0.0, None]) == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]


def test_unknown_figures_stay_unknown(db: Database) -> None:
    bare = TaskUsage(task="9", state="COMPLETED", elapsed_s=60)  # no TotalCPU, MaxRSS, times
    add_job(db, finished_job("j-bare", "carol", "file_stats", "local", bare))
    [carol] = usage_report(db).model_dump(exclude_unset=True)["groups"]
    assert carol["cpu_hours"] == pytest.approx(1 / 60)
    assert (carol["median_wait_s"], carol["cpu_efficiency"], carol["memory_efficiency"]) == (
        None,
        None,
        None,
    )
    assert describe([bare]) == "ran on 1 core over 0:01:00; CPU and memory use unknown"


def test_bad_groupings_and_dates_are_refused(lab: Database) -> None:
    with pytest.raises(ValidationError, match="--by takes user, job-type, cluster, month"):
        usage_report(lab, ["dataset"])
    with pytest.raises(ValidationError, match="--since takes a date"):
        usage_report(lab, [], "last tuesday")


def test_one_job_s_efficiency_in_a_line() -> None:
    [one], three, [no_rss] = (job.usage for job in (LAB[0], LAB[1], LAB[2]))
    assert describe([one]) == "used 6% of its 64 GB memory, 85% of 8 cores over 2:00:00"
    assert describe(three) == "3 tasks used 50% of their 48 GB memory, 50% of 12.0 CPU-hours"
    assert describe([no_rss]) == "used 95% of 1 core over 0:30:00; memory use unknown"
    assert describe([]) is None
    assert [memory_text(n) for n in (512, 1536 * 1024**2, 64 * 1024**3)] == [
        "512 B",
        "1.5 GB",
        "64 GB",
    ]


@pytest.fixture
def run(config: Config, lab: Database, tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(path), *args])

    return invoke


def test_cli_table_json_and_csv(run) -> None:  # type: ignore[no-untyped-def]
    table = run("usage", "--by", "cluster")
    assert table.exit_code == 0, table.output
    lines = {line.split()[1]: line for line in table.output.splitlines() if "│" in line[:2]}
    cells = [cell.strip() for cell in lines["local"].split("│")[2:-1]]
    assert cells == ["2", "2", "2.5", "1.5", "0:01:30", "39%", "unknown"]
    assert "0:25:00" in lines["raven"] and "70%" in lines["raven"] and "25%" in lines["raven"]
    data = json.loads(run("usage", "--by", "month", "--by", "user", "--json").output)
    assert data["by"] == ["month", "user"]
    assert [(g["month"], g["user"]) for g in data["groups"]][:2] == [
        ("2026-10", "alice"),
        ("2026-10", "bob"),
    ]
    rows = list(csv.DictReader(io.StringIO(run("usage", "--csv", "--since", "2026-11-01").output)))
    assert [r["user"] for r in rows] == ["alice", "bob", "root"]
    assert rows[1] == {
        "user": "bob",
        "jobs": "1",
        "tasks": "1",
        "cpu_hours": "2.0",
        "wall_hours": "1.0",
        "median_wait_s": "120.0",
        "cpu_efficiency": "0.25",
        "memory_efficiency": "",  # unknown
    }
    assert (
        "no finished task recorded since 2030-01-01" in run("usage", "--since", "2030-01-01").output
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "dataset"], "Invalid value for '--by': 'dataset' is not one of"),
        (["--since", "yesterday-ish"], "--since takes a date like 2021-12-15, not 'yesterday-ish'"),
        (["--json", "--csv"], "--json and --csv are exclusive"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(run, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    result = run("usage", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_status_shows_the_job_s_efficiency(run) -> None:  # type: ignore[no-untyped-def]
    shown = run("status", "j-a1")
    assert shown.exit_code == 0, shown.output
    line = "efficiency: used 6% of its 64 GB memory, 85% of 8 cores over 2:00:00"
    assert line in shown.output
    assert "max_rss_bytes" not in shown.output  # the tasks' records: in --json only
    assert json.loads(run("status", "j-a1", "--json").output)["usage"][0]["cpus"] == 8
    assert "efficiency:" not in run("status", "j-run").output


@pytest.fixture
def client(config: Config, lab: Database, tmp_path: Path) -> Iterator[TestClient]:
    cfg = web_config(config, tmp_path)
    seed(lab, cfg, tmp_path)
    with TestClient(create_app(cfg)) as client:
        yield client


def test_rest_any_member_sees_the_lab_s_usage(client: TestClient, lab: Database) -> None:
    bob = {"Authorization": f"Bearer {create_token(lab, 'bob')}"}  # a member, not an admin
    answer = client.get("/api/v1/usage", params={"by": ["month", "user"]}, headers=bob)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["by"] == ["month", "user"]
    assert {g["user"] for g in body["groups"]} == {"alice", "bob", "root"}
    report = usage_report(lab, ["month", "user"]).model_dump(mode="json", exclude_unset=True)
    assert body["groups"] == report["groups"]
    assert all(set(g) == set(body["groups"][0]) for g in body["groups"])
    assert "cluster" not in body["groups"][0]  # only the keys asked for
    since = client.get("/api/v1/usage", params={"since": "2026-11-01"}, headers=bob).json()
    assert sum(g["tasks"] for g in since["groups"]) == 4


def test_rest_usage_needs_a_login_and_good_input(client: TestClient, lab: Database) -> None:
    assert client.get("/api/v1/usage").status_code == 401
    bob = {"Authorization": f"Bearer {create_token(lab, 'bob')}"}
    bad_by = client.get("/api/v1/usage", params={"by": "dataset"}, headers=bob)
    assert bad_by.status_code == 422
    bad_day = client.get("/api/v1/usage", params={"since": "soon"}, headers=bob)
    assert bad_day.status_code == 422
    assert bad_day.json() == {"detail": "--since takes a date like 2021-12-15, not 'soon'"}


def test_the_usage_page_loads_its_charts_from_the_api(client: TestClient) -> None:
    assert login(client, "bob") == 303
    page = client.get("/usage", params={"since": "2026-11-01"})
    assert page.status_code == 200
    assert '<a href="/usage" aria-current="page">Usage</a>' in page.text
    assert 'data-api="/api/v1/usage" data-since="2026-11-01"' in page.text
    assert page.text.count("<canvas") == 4
    # The policy allows scripts from the app alone: the page has no inline script.
    assert "default-src 'self'" in page.headers["content-security-policy"]
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts and all(re.search(r'src="/static/[\w.]+\.js"', tag) for tag in scripts)
    for name in ("chart.umd.min.js", "usage.js", "chart.js.LICENSE.md"):
        assert client.get(f"/static/{name}").status_code == 200, name
    assert "Chart.js 4.6.1" in client.get("/static/chart.umd.min.js").text[:300]
    bad = client.get("/usage", params={"since": "soon"})
    assert bad.status_code == 400 and "since takes a date like 2021-12-15" in bad.text
    assert 'data-since=""' in bad.text


def test_a_finished_job_s_page_shows_its_efficiency(client: TestClient) -> None:
    assert login(client, "alice") == 303
    line = "used 6% of its 64 GB memory, 85% of 8 cores over 2:00:00"
    assert f'<td class="efficiency">{line}</td>' in client.get("/jobs/j-a1/live").text
    assert line in client.get("/jobs/j-a1").text
    assert 'class="efficiency"' not in client.get("/jobs/j-run").text


def test_empty_usage_says_the_local_cluster_keeps_no_accounting(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"  # no clusters section: `local`, plain processes
    path.write_text(yaml.safe_dump({"database": {"path": str(tmp_path / "db")}}))
    result = CliRunner().invoke(cli, ["--config", str(path), "usage"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "no finished task recorded: local runs jobs as plain processes, which keep no "
        "accounting (only jobs on SLURM are counted)"
    )

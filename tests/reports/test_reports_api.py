"""Reports through the API: generated as jobs from the team's own rows, PDFs opened and
their text read, CSV and JSON checked against hand-computed figures, a version per
generation with every older one downloadable, and the limits (roles, teams, bad input,
a failed job leaving nothing behind)."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from opscenter.jobs.runner import JobContext
from opscenter.models import Backup, Job, Report, ReportVersion
from tests.auth.test_auth import assert_unauthorized
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.reports.helpers import BASE, download, generate, last_month, own_team, pdf_text


async def add_backups(api: Api, team_id: int, storage_id: int, rows: list[dict[str, Any]]) -> None:
    async with api.app.state.ctx.db.write_session() as session:
        session.add_all(
            Backup(team_id=team_id, storage_id=storage_id, db_type="postgresql", **row)
            for row in rows
        )
        await session.commit()


def words(text: str) -> str:
    return " ".join(text.split())


async def counts(api: Api) -> tuple[int, int, int]:
    async with api.app.state.ctx.db.read_session() as s:
        return (
            int(await s.scalar(select(func.count(Report.id))) or 0),
            int(await s.scalar(select(func.count(ReportVersion.id))) or 0),
            int(await s.scalar(select(func.count(Job.id)).where(Job.kind == "report")) or 0),
        )


async def test_backup_summary_in_three_formats_with_versions(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    team = await own_team(api, admin, make_user, tmp_path)
    period, mid = last_month()
    sid = team.storage["id"]
    done = {"status": "completed", "created_at": mid, "completed_at": mid + timedelta(minutes=1)}
    await add_backups(
        api,
        team.id,
        sid,
        [
            {**done, "database_name": "sales", "size_bytes": 1000, "duration_seconds": 10.0},
            {**done, "database_name": "sales", "size_bytes": 2500, "duration_seconds": 20.0},
            {**done, "database_name": "crm", "size_bytes": 500, "duration_seconds": 6.0},
            {
                "database_name": "crm",
                "status": "failed",
                "created_at": mid,
                "error_code": "dump_failed",
                "error_message": "pg_dump: connection refused",
            },
            {"database_name": "hr", "status": "running", "created_at": mid},
            # The month before: not in the period.
            {
                **done,
                "database_name": "sales",
                "size_bytes": 9999,
                "created_at": mid - timedelta(days=40),
            },
        ],
    )

    accepted, job = await generate(api, team.client, kind="backup_summary", period=period)
    assert (
        accepted["status"] == "queued"
        and accepted["status_url"] == f"/api/v1/jobs/{accepted['job_id']}"
    )
    assert accepted["task_id"] == str(accepted["job_id"])
    assert job["status"] == "succeeded", job
    report_id = accepted["id"]

    pdf = await download(team.client, report_id)
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    assert f'filename="backup_summary-{period}-v1.pdf"' in pdf.headers["content-disposition"]
    text = words(pdf_text(pdf.content))
    assert "Backup summary" in text
    assert "5 backups were started in this period: 3 completed and 1 failed" in text
    assert "success rate 75.0 %" in text
    assert "The completed backups hold 4,000 bytes." in text
    assert "completed 3 4,000" in text and "failed 1 0" in text and "running 1 0" in text
    assert "(server removed) sales 2 2 0 3,500 15.00" in text
    assert "dump_failed pg_dump: connection refused" in text
    assert "Page 1 of" in text

    # The same kind and period again: new versions of the same report, in CSV and JSON.
    again, job = await generate(
        api, team.client, kind="backup_summary", period=period, format="csv"
    )
    assert job["status"] == "succeeded" and again["id"] == report_id
    csv_file = await download(team.client, report_id)
    assert csv_file.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(csv_file.text)))
    assert ["section", "table", "Status", "Backups", "Bytes"] in lines
    assert ["Overview", "Backups by status", "completed", "3", "4000"] in lines
    assert ["Overview", "Backups by status", "failed", "1", "0"] in lines
    by_db = [row[2:7] for row in lines if row[:2] == ["Databases", "Backups by database"]]
    assert by_db == [
        ["(server removed)", "crm", "2", "1", "1"],
        ["(server removed)", "sales", "2", "2", "0"],
        ["(server removed)", "hr", "1", "0", "0"],
    ]

    _, job = await generate(api, team.client, kind="backup_summary", period=period, format="json")
    assert job["status"] == "succeeded"
    doc = (await download(team.client, report_id)).json()
    [overview] = [s for s in doc["sections"] if s["heading"] == "Overview"]
    assert overview["tables"][0]["rows"] == [
        ["completed", 3, 4000],
        ["failed", 1, 0],
        ["running", 1, 0],
    ]
    [activity] = [s for s in doc["sections"] if s["heading"] == "Activity"]
    chart = activity["charts"][0]
    day = mid.date().isoformat()
    assert sum(chart["series"][0]["values"]) == 3 and sum(chart["series"][1]["values"]) == 1
    assert chart["series"][0]["values"][chart["labels"].index(day)] == 3
    [dbs] = [s for s in doc["sections"] if s["heading"] == "Databases"]
    assert dbs["tables"][0]["rows"][1][:7] == ["(server removed)", "sales", 2, 2, 0, 3500, 15.0]

    # Versions: newest first, each downloadable, the first one unchanged.
    versions = (await team.client.get(f"{BASE}/{report_id}/versions")).json()
    assert [v["version"] for v in versions["items"]] == [3, 2, 1]
    assert [v["format"] for v in versions["items"]] == ["json", "csv", "pdf"]
    assert versions["total"] == 3
    first = versions["items"][2]
    assert first["size_bytes"] == len(pdf.content)
    assert first["sha256"] == hashlib.sha256(pdf.content).hexdigest()
    assert first["generated_by"] == team.user.username
    old = await download(team.client, report_id, version=1)
    assert old.content == pdf.content
    assert (
        hashlib.sha256((await download(team.client, report_id, version=2)).content).hexdigest()
        == (versions["items"][1]["sha256"])
    )
    assert_error(
        await team.client.get(f"{BASE}/{report_id}/download", params={"version": 9}),
        404,
        "NOT_FOUND",
    )

    listed = (await team.client.get(BASE)).json()
    assert listed["total"] == 1
    [item] = listed["items"]
    assert item["kind"] == "backup_summary" and item["period"] == period
    assert item["latest_version"] == 3 and item["latest"]["format"] == "json"
    assert item["title"] == "Backup summary"


async def test_a_failed_job_leaves_no_version_and_no_file(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    team = await own_team(api, admin, make_user, tmp_path)
    period, _ = last_month()
    store = Path(team.storage["config"]["path"])
    shutil.rmtree(store)
    store.write_text("not a directory")  # the storage refuses every write
    accepted, job = await generate(api, team.client, kind="incident_summary", period=period)
    assert job["status"] == "failed" and job["error_code"] == "storage_failed", job
    versions = (await team.client.get(f"{BASE}/{accepted['id']}/versions")).json()
    assert versions["items"] == []
    report = (await team.client.get(f"{BASE}/{accepted['id']}")).json()
    assert report["latest_version"] == 0 and report["latest"] is None
    assert_error(await team.client.get(f"{BASE}/{accepted['id']}/download"), 404, "NOT_FOUND")
    # Storage back: the next generation is version 1, and it is the only file.
    store.unlink()
    store.mkdir()
    _, job = await generate(api, team.client, kind="incident_summary", period=period, format="json")
    assert job["status"] == "succeeded", job
    files = [p for p in store.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".json"
    assert (await team.client.get(f"{BASE}/{accepted['id']}")).json()["latest_version"] == 1


async def test_roles_teams_and_bad_input(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    team = await own_team(api, admin, make_user, tmp_path)
    other = await own_team(api, admin, make_user, tmp_path)
    period, _ = last_month()
    accepted, job = await generate(api, team.client, kind="costs", period=period)
    assert job["status"] == "succeeded"
    report_id = accepted["id"]

    before = await counts(api)
    bad: list[dict[str, Any]] = [
        {"kind": "weather", "period": period},
        {"kind": "costs", "period": "2026-13"},
        {"kind": "costs", "period": "last year"},
        {"kind": "costs", "period": "2999-01"},
        {"kind": "costs", "period": "2026-01-10..2026-01-01"},
        {"kind": "costs", "period": "2024-01-01..2025-06-01"},
        {"kind": "costs", "period": period, "format": "docx"},
        {"kind": "costs", "period": period, "title": ""},
        {"kind": "costs", "period": period, "surprise": 1},
        {"period": period},
    ]
    for body in bad:
        assert_error(await team.client.post(f"{BASE}/generate", json=body), 422, "VALIDATION_ERROR")
    # Another team's id is not there; a team without storage cannot keep a report.
    assert_error(
        await team.client.post(
            f"{BASE}/generate", json={"kind": "costs", "period": period, "team_id": other.id}
        ),
        404,
        "NOT_FOUND",
    )
    bare = await own_team(api, admin, make_user, tmp_path, storage=False)
    assert_error(
        await bare.client.post(f"{BASE}/generate", json={"kind": "costs", "period": period}),
        422,
        "VALIDATION_ERROR",
    )
    assert await counts(api) == before

    # Another team sees nothing of it.
    for url in (
        f"{BASE}/{report_id}",
        f"{BASE}/{report_id}/versions",
        f"{BASE}/{report_id}/download",
    ):
        assert_error(await other.client.get(url), 404, "NOT_FOUND")
    assert report_id not in [r["id"] for r in (await other.client.get(BASE)).json()["items"]]

    # A viewer of the team reads and downloads, but does not generate.
    viewer = await make_user("viewer", team_ids=[team.id])
    async with viewer.client(api) as v:
        assert [r["id"] for r in (await v.get(BASE)).json()["items"]] == [report_id]
        assert (await v.get(f"{BASE}/{report_id}/download")).status_code == 200
        assert (await v.get(f"{BASE}/kinds")).json()["total"] == 6
        assert_error(
            await v.post(f"{BASE}/generate", json={"kind": "costs", "period": period}),
            403,
            "FORBIDDEN",
        )
    async with api.client() as anonymous:
        assert_unauthorized(await anonymous.get(BASE))
        assert_unauthorized(await anonymous.get(f"{BASE}/{report_id}/download"))
        assert_unauthorized(
            await anonymous.post(f"{BASE}/generate", json={"kind": "costs", "period": period})
        )
    assert await counts(api) == before

    # The generation is in the audit trail.
    r = await admin.get(
        "/api/v1/audit/logs",
        params={"action": "report.generate", "resource_type": "report", "resource_id": report_id},
    )
    assert r.status_code == 200, r.text
    [entry] = r.json()["items"]
    assert entry["details"]["kind"] == "costs" and entry["details"]["period"] == period


async def test_periods_are_canonical(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    team = await own_team(api, admin, make_user, tmp_path)
    a, _ = await generate(api, team.client, kind="restore_tests", period="2025-q4", format="json")
    b, _ = await generate(api, team.client, kind="restore_tests", period=" 2025-Q4 ", format="json")
    assert a["id"] == b["id"]
    report = (await team.client.get(f"{BASE}/{a['id']}")).json()
    assert report["period"] == "2025-Q4" and report["latest_version"] == 2
    doc = (await download(team.client, a["id"])).json()
    assert doc["period"] == "2025-Q4 (2025-10-01 to 2025-12-31)"
    r = await team.client.post(
        f"{BASE}/generate",
        json={"kind": "restore_tests", "period": "2025-11-01..2025-11-30", "format": "csv"},
    )
    assert r.status_code == 202
    assert (await team.client.get(f"{BASE}/{r.json()['id']}")).json()[
        "period"
    ] == "2025-11-01..2025-11-30"
    await api.app.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=60)


async def test_the_finisher_removes_what_a_lost_job_left(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    """A process lost after writing the file but before recording the version: the
    finisher (run for the interrupted job by whichever process settles it) removes it."""
    team = await own_team(api, admin, make_user, tmp_path)
    period, _ = last_month()
    store = Path(team.storage["config"]["path"])
    shutil.rmtree(store)
    store.write_text("not a directory")
    accepted, job = await generate(api, team.client, kind="costs", period=period)
    assert job["status"] == "failed"
    store.unlink()
    store.mkdir()
    runner = api.app.state.ctx.runner
    async with api.app.state.ctx.db.read_session() as s:
        row = await s.get(Job, accepted["job_id"])
        assert row is not None
        context = JobContext(row.id, row.kind, row.team_id, row.params, runner)
    left = store / row.params["storage_key"]
    left.parent.mkdir(parents=True)
    left.write_bytes(b"%PDF-1.7 half written")
    await runner.kinds["report"].finish(context, "interrupted", "interrupted", "process lost")
    assert not left.exists()
    assert (await team.client.get(f"{BASE}/{accepted['id']}/versions")).json()["items"] == []

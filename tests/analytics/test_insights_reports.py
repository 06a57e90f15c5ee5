"""Insights: an injected anomaly is found, a normal series is not, a failing streak and a
dismissal that survives recomputation. Custom reports: saved, generated into versions
(hand-computed rows), downloaded, scheduled; bad input, roles and teams."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from opscenter.analytics import insights
from opscenter.analytics.plugin import generate_due
from opscenter.core.clock import utcnow
from opscenter.models import AnalyticsReport, AnalyticsReportResult, InsightDismissal
from tests.analytics.helpers import BASE, Team, add, backup, own_team
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error

NORMAL = [1000, 1010, 990, 1005, 995, 1000, 1002, 998, 1001, 1003]


async def count(api: Api, model: type, team_id: int) -> int:
    async with api.app.state.ctx.db.read_session() as session:
        n = await session.scalar(
            select(func.count()).select_from(model).where(model.team_id == team_id)  # type: ignore[attr-defined]
        )
    return int(n or 0)


def at(insight: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(insight["at"].replace("Z", "+00:00"))


async def series(api: Api, team: Team) -> dict[str, int]:
    """`steady`: ten ordinary backups, verified. `shrunk`: nine ordinary ones, then one of
    400 bytes. `broken`: two good ones, then three failures."""
    now = utcnow()
    rows = []
    for i, size in enumerate(NORMAL):
        at = now - timedelta(days=20 - 2 * i)
        rows.append(
            backup(team, "steady", at, size=size, duration=60 + i % 3, verification="checksum_ok")
        )
    for i, size in enumerate([*NORMAL[:9], 400]):
        at = now - timedelta(days=20 - 2 * i, hours=1)
        rows.append(backup(team, "shrunk", at, size=size, duration=60, verification="deep_ok"))
    for i, status in enumerate(["completed", "completed", "failed", "failed", "interrupted"]):
        at = now - timedelta(days=5 - i)
        size = 1000 if status == "completed" else None
        rows.append(
            backup(team, "broken", at, status, size=size, duration=5.0, verification="checksum_ok")
        )
    added = await add(api, *rows)
    return {"shrunk": added[19].id, "streak_start": added[22].id}


async def test_an_injected_anomaly_is_found_and_a_normal_series_is_not(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    ids = await series(api, team)
    async with team.client as c:
        r = await c.get(f"{BASE}/insights")
        assert r.status_code == 200, r.text
        found = r.json()["items"]
        assert {i["database_name"] for i in found} == {"shrunk", "broken"}  # never "steady"
        [size] = [i for i in found if i["kind"] == "size_anomaly"]
        assert size["database_name"] == "shrunk" and size["severity"] == "warning"
        # sizes sorted: 400, 990, 995, 998, 1000, 1000, ...: median 1000, MAD 3.5; the
        # deviation floor (5 % of the median, 50) beats 1.4826 * 3.5: z = -600 / 50
        assert (size["value"], size["median"], size["mad"]) == (400, 1000, 3.5)
        assert size["score"] == -12.0
        assert f"/api/v1/backups/{ids['shrunk']}" in size["links"]
        [streak] = [i for i in found if i["kind"] == "failing_streak"]
        assert streak["database_name"] == "broken" and streak["value"] == 3
        assert len(found) == 2
        # the same anomaly keeps its fingerprint when computed again
        again = (await c.get(f"{BASE}/insights")).json()["items"]
        assert {i["fingerprint"] for i in again} == {i["fingerprint"] for i in found}
        board = (await c.get(f"{BASE}/dashboard-data")).json()
        assert board["insights_total"] == 2
        assert board["insights_by_kind"] == {"size_anomaly": 1, "failing_streak": 1}


async def test_the_dashboard_answers_recent_insights_while_it_computes_them_anew(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = await own_team(api, admin, make_user)
    await series(api, team)
    monkeypatch.setattr(insights, "RECENT_SECONDS", 0.0)  # every answer is due for renewal
    async with team.client as c:

        async def shown() -> int:
            r = await c.get(f"{BASE}/dashboard-data")
            assert r.status_code == 200, r.text
            total: int = r.json()["insights_total"]
            return total

        assert await shown() == 2  # none yet: computed in the request
        now = utcnow()
        await add(
            api,
            *(backup(team, "failing", now - timedelta(hours=h), "failed") for h in (3, 2, 1)),
        )
        assert await shown() == 2  # the last answer, while the new one is computed
        for _ in range(100):
            if await shown() == 3:
                break
            await asyncio.sleep(0.05)
        assert await shown() == 3


async def test_a_duration_jump_and_verification_gaps_are_found(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """`slow`: eight backups over three weeks, none verified, the newest far slower (a
    faster one is never flagged). `lapsed`: verified three weeks ago, not since."""
    team = await own_team(api, admin, make_user)
    now = utcnow()
    durations = [60, 62, 61, 1, 60, 61, 60, 300]
    slow = [
        backup(team, "slow", now - timedelta(days=21 - 3 * i), size=1000, duration=d)
        for i, d in enumerate(durations)
    ]
    lapsed = [
        backup(
            team,
            "lapsed",
            now - timedelta(days=d),
            size=1000,
            duration=60,
            verification="deep_ok" if d == 21 else "unverified",
        )
        for d in (21, 12, 3)
    ]
    await add(api, *slow, *lapsed)
    async with team.client as c:
        r = await c.get(f"{BASE}/insights")
        assert r.status_code == 200, r.text
        found = {(i["kind"], i["database_name"]): i for i in r.json()["items"]}
    assert set(found) == {
        ("duration_jump", "slow"),
        ("verification_gap", "slow"),
        ("verification_gap", "lapsed"),
    }
    jump = found["duration_jump", "slow"]
    # sorted: 1, 60, 60, 60, 61, 61, 62, 300: median (60 + 61) / 2; deviations 0.5 (five
    # times), 1.5, 1.5, 59.5, 239.5: MAD 0.5; the floor, 10 % of the median (6.05), beats
    # 1.4826 * 0.5: z = 239.5 / 6.05
    assert (jump["value"], jump["median"], jump["mad"], jump["score"]) == (300, 60.5, 0.5, 39.59)
    assert f"/api/v1/backups/{slow[-1].id}" in jump["links"]
    assert at(jump) == slow[-1].completed_at
    assert jump["team_id"] == team.id and jump["server_id"] == team.server_id
    never = found["verification_gap", "slow"]
    assert never["at"] is None and "none of its backups" in never["detail"]
    gap = found["verification_gap", "lapsed"]
    assert f"the last verified backup is backup {lapsed[0].id}" in gap["detail"]
    assert at(gap) == lapsed[0].created_at


async def test_a_dismissed_insight_stays_dismissed(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    team = await own_team(api, admin, make_user)
    other = await own_team(api, admin, make_user)
    await series(api, team)
    viewer = await make_user("viewer", team_ids=[team.id])
    async with team.client as c:
        [size] = [
            i
            for i in (await c.get(f"{BASE}/insights")).json()["items"]
            if i["kind"] == "size_anomaly"
        ]
        url = f"{BASE}/insights/{size['fingerprint']}/dismiss"
        async with api.client() as anonymous:
            assert_error(await anonymous.post(url, json={}), 401, "UNAUTHORIZED")
        async with viewer.client(api) as v:
            assert_error(await v.post(url, json={}), 403, "FORBIDDEN")
        async with other.client as o:  # another team's insight does not exist for it
            assert_error(await o.post(url, json={}), 404, "NOT_FOUND")
        assert_error(await c.post(url, json={"reason": "x", "extra": 1}), 422, "VALIDATION_ERROR")
        assert_error(await c.post(f"{BASE}/insights/{'0' * 64}/dismiss", json={}), 404, "NOT_FOUND")
        assert_error(
            await c.post(f"{BASE}/insights/nothex/dismiss", json={}), 422, "VALIDATION_ERROR"
        )
        assert await count(api, InsightDismissal, team.id) == 0
        r = await c.post(url, json={"reason": "a table was archived"})
        assert r.status_code == 200, r.text
        assert r.json()["dismissed"] is True
        assert_error(await c.post(url, json={}), 409, "CONFLICT")
        assert await count(api, InsightDismissal, team.id) == 1
        kinds = [i["kind"] for i in (await c.get(f"{BASE}/insights")).json()["items"]]
        assert kinds == ["failing_streak"]
        every = (await c.get(f"{BASE}/insights", params={"include_dismissed": True})).json()
        assert {i["kind"]: i["dismissed"] for i in every["items"]} == {
            "size_anomaly": True,
            "failing_streak": False,
        }
    async with api.client(admin_headers) as a:
        trail = (
            await a.get("/api/v1/audit/logs", params={"action": "analytics.insight_dismiss"})
        ).json()
        assert any(e["details"]["fingerprint"] == size["fingerprint"] for e in trail["items"])


REPORT = {
    "name": "weekly backups",
    "metrics": ["backups", "completed", "success_rate", "mean_size_bytes", "verification_coverage"],
    "group_by": "target",
    "window": "30d",
}


async def test_a_report_is_generated_into_versions_and_downloaded(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    other = await own_team(api, admin, make_user)
    await series(api, team)
    async with team.client as c:
        r = await c.post(f"{BASE}/reports", json={**REPORT, "filters": {"database_name": "broken"}})
        assert r.status_code == 201, r.text
        report = r.json()
        assert (report["team_id"], report["next_run_at"], report["last_version"]) == (
            team.id,
            None,
            0,
        )
        first = await c.post(f"{BASE}/reports/{report['id']}/generate")
        assert first.status_code == 201, first.text
        body = first.json()
        assert (body["version"], body["trigger"]) == (1, "manual")
        assert body["columns"] == ["server_id", "database_name", *REPORT["metrics"]]
        # broken: 2 completed (1000 bytes, verified) of 5 finished
        assert body["rows"] == [
            {
                "server_id": team.server_id,
                "database_name": "broken",
                "backups": 5,
                "completed": 2,
                "success_rate": 40.0,
                "mean_size_bytes": 1000.0,
                "verification_coverage": 100.0,
            }
        ]
        second = (await c.post(f"{BASE}/reports/{report['id']}/generate")).json()
        assert second["version"] == 2
        versions = (await c.get(f"{BASE}/reports/{report['id']}/versions")).json()
        assert [v["version"] for v in versions["items"]] == [2, 1] and versions["total"] == 2
        got = (await c.get(f"{BASE}/reports/{report['id']}/versions/1")).json()
        assert got["rows"] == body["rows"]
        down = await c.get(
            f"{BASE}/reports/{report['id']}/versions/1/download", params={"format": "csv"}
        )
        assert down.status_code == 200 and down.headers["content-type"].startswith("text/csv")
        assert "attachment" in down.headers["content-disposition"]
        [line] = list(csv.DictReader(io.StringIO(down.text)))
        assert (line["database_name"], line["success_rate"]) == ("broken", "40.0")
        as_json = await c.get(f"{BASE}/reports/{report['id']}/versions/2/download")
        assert as_json.json()["version"] == 2
        assert_error(await c.get(f"{BASE}/reports/{report['id']}/versions/9"), 404, "NOT_FOUND")
        by_day = await c.post(
            f"{BASE}/reports",
            json={**REPORT, "name": "by day", "group_by": "none", "metrics": ["backups"]},
        )
        whole = (await c.post(f"{BASE}/reports/{by_day.json()['id']}/generate")).json()
        assert whole["rows"] == [{"backups": 25}]
    async with other.client as o:
        assert_error(await o.get(f"{BASE}/reports/{report['id']}"), 404, "NOT_FOUND")
        assert_error(await o.post(f"{BASE}/reports/{report['id']}/generate"), 404, "NOT_FOUND")
        assert report["id"] not in [
            x["id"] for x in (await o.get(f"{BASE}/reports")).json()["items"]
        ]


async def test_a_viewer_reads_reports_but_cannot_make_or_generate_them(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        report = (await c.post(f"{BASE}/reports", json=REPORT)).json()
    viewer = await make_user("viewer", team_ids=[team.id])
    async with viewer.client(api) as v:
        assert (await v.get(f"{BASE}/reports/{report['id']}")).status_code == 200
        assert_error(await v.post(f"{BASE}/reports/{report['id']}/generate"), 403, "FORBIDDEN")
        assert_error(
            await v.post(f"{BASE}/reports", json={**REPORT, "name": "v"}), 403, "FORBIDDEN"
        )
        assert_error(await v.delete(f"{BASE}/reports/{report['id']}"), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        assert_error(await anonymous.post(f"{BASE}/reports", json=REPORT), 401, "UNAUTHORIZED")
        assert_error(
            await anonymous.post(f"{BASE}/reports/{report['id']}/generate"), 401, "UNAUTHORIZED"
        )
    assert await count(api, AnalyticsReportResult, team.id) == 0


async def test_bad_reports_are_refused_with_nothing_written(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    bad = [
        {**REPORT, "metrics": ["nonsense"]},
        {**REPORT, "metrics": []},
        {**REPORT, "metrics": ["backups", "backups"]},
        {**REPORT, "group_by": "server"},
        {**REPORT, "window": "400d"},
        {**REPORT, "window": "month"},
        {**REPORT, "schedule": "every day"},
        {**REPORT, "schedule": "0 3 * *"},
        {**REPORT, "timezone": "Mars/Olympus"},
        {**REPORT, "name": ""},
        {**REPORT, "filters": {"server_id": 0}},
        {**REPORT, "filters": {"colour": "red"}},
        {**REPORT, "unknown": 1},
    ]
    async with team.client as c:
        for body in bad:
            assert_error(await c.post(f"{BASE}/reports", json=body), 422, "VALIDATION_ERROR")
        assert await count(api, AnalyticsReport, team.id) == 0
        assert (await c.post(f"{BASE}/reports", json=REPORT)).status_code == 201
        assert_error(await c.post(f"{BASE}/reports", json=REPORT), 409, "CONFLICT")
        assert await count(api, AnalyticsReport, team.id) == 1


async def test_a_scheduled_report_is_generated_when_its_slot_comes(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    await series(api, team)
    async with team.client as c:
        r = await c.post(
            f"{BASE}/reports",
            json={**REPORT, "name": "daily", "schedule": "30 6 * * *", "timezone": "Europe/Berlin"},
        )
        report = r.json()
        slot = utcnow().fromisoformat(report["next_run_at"].replace("Z", "+00:00"))
        assert (slot.hour, slot.minute) in ((5, 30), (4, 30))  # 06:30 in Berlin, in UTC
        assert (slot - utcnow()) <= timedelta(days=1)
        generated = await generate_due(api.app.state.ctx, slot + timedelta(seconds=1))
        assert (report["id"], 1) in generated
        after = (await c.get(f"{BASE}/reports/{report['id']}")).json()
        assert after["last_version"] == 1
        assert after["next_run_at"] > report["next_run_at"]
        [version] = (await c.get(f"{BASE}/reports/{report['id']}/versions")).json()["items"]
        assert version["trigger"] == "schedule" and version["row_count"] == 3
        # the next pass at the same time finds nothing due
        assert (report["id"], 2) not in await generate_due(
            api.app.state.ctx, slot + timedelta(seconds=2)
        )
        assert (await c.delete(f"{BASE}/reports/{report['id']}")).status_code == 204
        assert_error(await c.get(f"{BASE}/reports/{report['id']}"), 404, "NOT_FOUND")

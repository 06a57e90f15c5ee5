"""Each report kind's figures from rows made in the test for a team of its own, compared
with values computed by hand (JSON for exact numbers, the PDF's text for one kind)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from opscenter.models import Backup, Finding, Incident, VerificationRun
from tests.conftest import Api, UserFactory
from tests.core.helpers import uid
from tests.finops.helpers import focus_csv, focus_row, imported
from tests.incidents.test_incidents_api import INCIDENTS, seed_example
from tests.reports.helpers import Team, download, generate, last_month, own_team, pdf_text


async def report_json(api: Api, team: Team, kind: str, period: str) -> dict[str, Any]:
    accepted, job = await generate(api, team.client, kind=kind, period=period, format="json")
    assert job["status"] == "succeeded", job
    doc: dict[str, Any] = (await download(team.client, accepted["id"])).json()
    return doc


def section(doc: dict[str, Any], heading: str) -> dict[str, Any]:
    [found] = [s for s in doc["sections"] if s["heading"] == heading]
    return found


async def test_incident_summary(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    team = await own_team(api, admin, make_user, tmp_path)
    period, mid = last_month()
    ids = []
    for severity in ("critical", "low"):
        r = await team.client.post(INCIDENTS, json=seed_example(uid("sq"), severity=severity))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    async with api.app.state.ctx.db.write_session() as s:
        await s.execute(
            update(Incident)
            .where(Incident.id == ids[0])
            .values(
                created_at=mid,
                acknowledged_at=mid + timedelta(hours=1),
                resolved_at=mid + timedelta(hours=3),
                status="resolved",
            )
        )
        later = mid + timedelta(days=1)
        await s.execute(
            update(Incident)
            .where(Incident.id == ids[1])
            .values(created_at=later, acknowledged_at=later + timedelta(minutes=30))
        )
        await s.commit()
    doc = await report_json(api, team, "incident_summary", period)
    overview = section(doc, "Overview")
    assert overview["paragraphs"] == [
        "2 incidents were opened in this period; 1 of them are resolved. "
        "Mean time to acknowledge 0.75 h, mean time to resolve 3.0 h."
    ]
    assert overview["tables"][0]["rows"] == [
        ["critical", 1, 1, 1.0, 3.0],
        ["low", 1, 0, 0.5, None],
    ]
    assert section(doc, "Status now")["tables"][0]["rows"] == [["open", 1], ["resolved", 1]]
    listed = section(doc, "Incidents")["tables"][0]["rows"]
    assert [row[0] for row in listed] == [ids[1], ids[0]]
    assert listed[1][6] == 3.0


async def test_security_findings_pdf(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    team = await own_team(api, admin, make_user, tmp_path)
    period, mid = last_month()
    r = await team.client.post(
        "/api/v1/secops/assets", json={"name": uid("shop-"), "kind": "service"}
    )
    assert r.status_code == 201, r.text
    asset = r.json()
    now = datetime.now(UTC)

    def finding(ident: str, severity: str, **fields: Any) -> Finding:
        values: dict[str, Any] = {
            "first_seen": mid,
            "last_seen": mid,
            "due_at": now + timedelta(days=10),
            **fields,
        }
        return Finding(
            team_id=team.id,
            asset_id=asset["id"],
            scanner="trivy",
            fingerprint=hashlib.sha256(f"{asset['id']}{ident}".encode()).hexdigest(),
            identifier=ident,
            title=f"{ident} in openssl",
            severity=severity,
            component="openssl",
            **values,
        )

    async with api.app.state.ctx.db.write_session() as s:
        s.add_all(
            [
                finding("CVE-2026-0001", "high", cvss_score=7.5, due_at=now - timedelta(days=1)),
                finding("CVE-2026-0002", "high", cvss_score=8.1),
                finding(
                    "CVE-2026-0003",
                    "critical",
                    status="fixed",
                    fixed_at=mid + timedelta(days=2),
                    cvss_score=9.8,
                ),
                finding("CVE-2026-0004", "low", first_seen=mid - timedelta(days=60)),
            ]
        )
        await s.commit()

    accepted, job = await generate(api, team.client, kind="security_findings", period=period)
    assert job["status"] == "succeeded", job
    text = " ".join(pdf_text((await download(team.client, accepted["id"])).content).split())
    assert "Security findings" in text
    assert (
        "3 findings were first seen in this period and 1 were fixed. 3 are open now, 1 of them "
        "past their due date." in text
    )
    # Severity, new in period, fixed in period, open now, overdue now.
    assert "critical 1 1 0 0" in text
    assert "high 2 0 2 1" in text
    assert "low 0 0 1 0" in text
    assert text.index("CVE-2026-0002") < text.index("CVE-2026-0001") < text.index("CVE-2026-0004")
    assert "CVE-2026-0003 CVE" not in text  # the fixed one is not listed as open

    doc = await report_json(api, team, "security_findings", period)
    assert section(doc, "Overview")["tables"][0]["rows"] == [
        ["critical", 1, 1, 0, 0],
        ["high", 2, 0, 2, 1],
        ["medium", 0, 0, 0, 0],
        ["low", 0, 0, 1, 0],
        ["info", 0, 0, 0, 0],
    ]
    assert [row[0] for row in section(doc, "Open findings")["tables"][0]["rows"]] == [
        "CVE-2026-0002",
        "CVE-2026-0001",
        "CVE-2026-0004",
    ]


async def test_restore_tests(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    team = await own_team(api, admin, make_user, tmp_path)
    period, mid = last_month()
    async with api.app.state.ctx.db.write_session() as s:
        backup = Backup(
            team_id=team.id,
            storage_id=team.storage["id"],
            db_type="postgresql",
            database_name="billing",
            status="completed",
            created_at=mid,
        )
        s.add(backup)
        await s.flush()
        run = {"team_id": team.id, "backup_id": backup.id, "created_at": mid}
        s.add_all(
            [
                VerificationRun(
                    **run,
                    test_type="restore",
                    status="passed",
                    duration_seconds=30,
                    rto_seconds=120,
                ),
                VerificationRun(
                    **run,
                    test_type="restore",
                    status="failed",
                    duration_seconds=10,
                    error_code="restore_failed",
                ),
                VerificationRun(**run, test_type="checksum", status="passed", duration_seconds=2),
                # Outside the period.
                VerificationRun(
                    **{**run, "created_at": mid - timedelta(days=45)},
                    test_type="restore",
                    status="failed",
                ),
            ]
        )
        await s.commit()
    doc = await report_json(api, team, "restore_tests", period)
    overview = section(doc, "Overview")
    assert overview["paragraphs"] == [
        "3 verification runs in this period, 2 of them restore tests; 2 passed, "
        "pass rate 66.7 % of those that ended."
    ]
    assert overview["tables"][0]["rows"] == [
        ["checksum", "passed", 1, 2.0, None],
        ["restore", "failed", 1, 10.0, None],
        ["restore", "passed", 1, 30.0, 120.0],
    ]
    [row] = section(doc, "Databases")["tables"][0]["rows"]
    assert row[:4] == ["billing", 3, 2, 120.0]
    [failed] = section(doc, "Failures")["tables"][0]["rows"]
    assert failed[1:5] == [backup.id, "restore", "failed", "restore_failed"]


async def test_costs(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    team = await own_team(api, admin, make_user, tmp_path)
    period, mid = last_month()
    first, second = mid.date().isoformat(), (mid + timedelta(days=1)).date().isoformat()
    done = await imported(
        api,
        team.client,
        focus_csv(
            [
                focus_row(first, "EC2", "10.00"),
                focus_row(second, "EC2", "5.50"),
                focus_row(first, "S3", "2.25"),
            ]
        ),
    )
    assert done["status"] == "completed", done
    doc = await report_json(api, team, "costs", period)
    overview = section(doc, "Overview")
    assert overview["paragraphs"][0].startswith("Total: 17.75 USD")
    services, storage = overview["tables"]
    assert services["rows"] == [["EC2", "USD", 15.5, 15.5], ["S3", "USD", 2.25, 2.25]]
    assert storage["rows"] == []
    [chart] = overview["charts"]
    values = dict(zip(chart["labels"], chart["series"][0]["values"], strict=True))
    assert values[first] == 12.25 and values[second] == 5.5
    assert sum(values.values()) == 17.75


async def test_compliance_matches_the_live_assessment_in_json_and_pdf(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    """The compliance kind is the compliance domain's own assessment of the team for the
    period: each framework's requirements with the same statuses, and real text in the PDF."""
    team = await own_team(api, admin, make_user, tmp_path)
    period, mid = last_month()
    start = mid.replace(day=1, hour=0)
    end = (start + timedelta(days=32)).replace(day=1)
    doc = await report_json(api, team, "compliance", period)
    frameworks = (await team.client.get("/api/v1/audit/frameworks")).json()
    frameworks = frameworks["items"] if isinstance(frameworks, dict) else frameworks
    assert len(doc["sections"]) == len(frameworks) == 3
    for framework in frameworks:
        live = await team.client.get(
            f"/api/v1/audit/frameworks/{framework['id']}/assessment",
            params={"start": start.isoformat(), "end": end.isoformat()},
        )
        assert live.status_code == 200, live.text
        expected = {r["id"]: r["status"] for r in live.json()["requirements"]}
        [found] = [s for s in doc["sections"] if s["heading"].startswith(framework["name"])]
        [table] = found["tables"]
        assert {row[0]: row[2] for row in table["rows"]} == expected
    accepted, job = await generate(api, team.client, kind="compliance", period=period, format="pdf")
    assert job["status"] == "succeeded", job
    text = pdf_text((await download(team.client, accepted["id"])).content)
    assert "Compliance status" in text and "A.8.13" in text

"""The compliance API on SQLite and PostgreSQL: the catalogue, uploaded evidence that
counts only within its effective period, reports kept as immutable snapshots with their
downloads, bad input refused with nothing written, team scoping and who may do what."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from opscenter.models import ComplianceEvidence, ComplianceReport
from tests.compliance.helpers import (
    EVIDENCE,
    FRAMEWORKS,
    REPORTS,
    add_evidence,
    assess,
    control,
    own_team,
    requirement,
    z,
)
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error, role_user
from tests.reports.helpers import pdf_text

Q1 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC))


async def stored(api: Api) -> tuple[int, int]:
    """Evidence and reports, counted in the database itself."""
    async with api.app.state.ctx.db.read_session() as session:
        evidence = await session.scalar(select(func.count()).select_from(ComplianceEvidence))
        reports = await session.scalar(select(func.count()).select_from(ComplianceReport))
    return int(evidence or 0), int(reports or 0)


async def test_frameworks_list_requirements_and_cross_framework_controls(
    admin: httpx.AsyncClient,
) -> None:
    r = await admin.get(FRAMEWORKS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [f["id"] for f in body["items"]] == ["soc2", "iso27001", "nist-csf"]
    assert body["total"] == 3
    iso = body["items"][1]
    assert (iso["name"], iso["version"], iso["requirement_count"]) == (
        "ISO/IEC 27001:2022 Annex A",
        "2022",
        93,
    )
    backup = next(r for r in iso["requirements"] if r["id"] == "A.8.13")
    assert backup["group"] == "A.8" and backup["group_title"] == "Technological controls"
    assert backup["controls"] == [
        "backup-performed",
        "backup-verified",
        "restore-tested",
        "backup-encrypted",
    ]
    performed = next(c for c in iso["controls"] if c["id"] == "backup-performed")
    assert performed["requirements"]["soc2"] == ["A1.2", "CC9.1"]
    assert performed["requirements"]["nist-csf"] == ["PR.DS-11", "PR.IR-03"]
    assert performed["gathered_by_platform"] is True

    one = await admin.get(f"{FRAMEWORKS}/nist-csf")
    assert one.status_code == 200 and one.json()["requirement_count"] == 106
    assert_error(await admin.get(f"{FRAMEWORKS}/pci-dss"), 404, "NOT_FOUND")
    controls = (await admin.get("/api/v1/audit/controls")).json()["items"]
    assert {"backup-performed", "audit-trail-intact", "security-policy"} <= {
        c["id"] for c in controls
    }


async def test_uploaded_evidence_counts_only_within_its_effective_period(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    start, end = Q1
    async with team.client as c:
        # A.5.1 (policies) has one control, security-policy, evidenced by uploads only.
        before = await assess(c, "iso27001", start, end)
        assert requirement(before, "A.5.1")["status"] == "no_evidence"

        last_year = await add_evidence(
            c,
            control_ids=["security-policy"],
            effective_from="2025-01-01T00:00:00Z",
            effective_to="2025-12-31T23:59:59Z",
        )
        assert last_year["team_id"] == team.id and last_year["uploaded_by"] == team.user.username
        outside = await assess(c, "iso27001", start, end)
        assert requirement(outside, "A.5.1")["status"] == "no_evidence"
        assert control(outside, "security-policy")["evidence"] == []

        await add_evidence(
            c,
            control_ids=["security-policy"],
            effective_from="2026-02-01T00:00:00Z",
            effective_to="2026-12-31T00:00:00Z",
        )
        part = await assess(c, "iso27001", start, end)
        assert requirement(part, "A.5.1")["status"] == "partial"

        bridge = await add_evidence(
            c,
            control_ids=["security-policy", "change-management"],
            effective_from="2025-06-01",
            effective_to="2026-02-15",
            description="Policy v3, approved by the board",
            link=None,
        )
        whole = await assess(c, "iso27001", start, end)
        assert requirement(whole, "A.5.1")["status"] == "met"
        policy = control(whole, "security-policy")
        assert [e["source"] for e in policy["evidence"]] == ["upload", "upload"]
        assert requirement(whole, "A.8.32")["status"] == "partial"  # change-management
        assert whole["summary"]["met"] >= 3  # A.5.1, A.5.36 and A.5.37 share the control
        assert sum(whole["summary"].values()) == 93

        # Removing the bridge leaves a hole in February: partial again.
        assert (await c.delete(f"{EVIDENCE}/{bridge['id']}")).status_code == 204
        again = await assess(c, "iso27001", start, end)
        assert requirement(again, "A.5.1")["status"] == "partial"
        listed = (await c.get(EVIDENCE, params={"control_id": "security-policy"})).json()
        assert listed["total"] == 2
        assert (await c.get(EVIDENCE, params={"control_id": "asset-inventory"})).json()[
            "total"
        ] == 0


async def test_a_report_is_an_immutable_snapshot_with_downloads(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    start, end = Q1
    async with team.client as c:
        await add_evidence(
            c,
            control_ids=["security-policy"],
            effective_from="2025-01-01",
            effective_to="2027-01-01",
        )
        r = await c.post(
            f"{REPORTS}/generate",
            json={"framework": "soc2", "period_start": z(start), "period_end": z(end)},
        )
        assert r.status_code == 201, r.text
        report = r.json()
        assert report["team_id"] == team.id and report["generated_by"] == team.user.username
        snapshot = report["assessment"]
        assert snapshot["framework"] == {
            "id": "soc2",
            "name": "SOC 2 Trust Services Criteria (Security and Availability)",
            "version": "2017 TSC, revised points of focus 2022",
        }
        assert (snapshot["period_start"], snapshot["period_end"]) == (z(start), z(end))
        assert report["summary"] == snapshot["summary"]
        assert sum(report["summary"].values()) == 36
        assert requirement(snapshot, "CC5.3")["status"] == "met"  # security-policy only
        assert requirement(snapshot, "CC1.2")["status"] == "not_assessed"

        # Evidence added later changes a new assessment, never the stored report.
        await add_evidence(
            c,
            control_ids=["supplier-review"],
            effective_from="2026-01-01",
            effective_to="2026-12-31",
        )
        assert requirement(await assess(c, "soc2", start, end), "CC9.2")["status"] == "met"
        kept = (await c.get(f"{REPORTS}/{report['id']}")).json()
        assert kept == report
        assert requirement(kept["assessment"], "CC9.2")["status"] == "no_evidence"

        listed = (await c.get(REPORTS, params={"framework": "soc2"})).json()
        assert [i["id"] for i in listed["items"]] == [report["id"]]
        assert (await c.get(REPORTS, params={"framework": "iso27001"})).json()["total"] == 0

        as_json = await c.get(f"{REPORTS}/{report['id']}/download")
        assert as_json.status_code == 200
        assert as_json.headers["content-type"].startswith("application/json")
        assert as_json.json() == report
        as_csv = await c.get(f"{REPORTS}/{report['id']}/download", params={"format": "csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert (
            f"compliance-soc2-{report['id']}-20260101-20260331.csv"
            in as_csv.headers["content-disposition"]
        )
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        expected = sum(
            max(1, sum(max(1, len(ctl["evidence"])) for ctl in req["controls"]))
            for req in snapshot["requirements"]
        )
        assert len(rows) == expected
        cc53 = [row for row in rows if row["requirement_id"] == "CC5.3"]
        assert [
            (row["control_id"], row["control_status"], row["evidence_source"]) for row in cc53
        ] == [("security-policy", "met", "upload")]
        as_pdf = await c.get(f"{REPORTS}/{report['id']}/download", params={"format": "pdf"})
        assert as_pdf.headers["content-type"] == "application/pdf"
        text = pdf_text(as_pdf.content)
        assert "SOC 2" in text and "CC5.3" in text and "security-policy" in text


async def test_bad_input_is_refused_with_nothing_written(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    ok: dict[str, Any] = {
        "title": "Policy",
        "control_ids": ["security-policy"],
        "effective_from": "2026-01-01T00:00:00Z",
        "effective_to": "2026-12-31T00:00:00Z",
        "link": "https://docs.example.com/p.pdf",
    }
    before = await stored(api)
    async with team.client as c:
        for bad in (
            {"effective_to": "2025-12-31T00:00:00Z"},  # before effective_from
            {"control_ids": ["security-policy", "no-such-control"]},
            {"control_ids": []},
            {"link": None},  # neither a link nor a description
            {"link": "javascript:alert(1)"},
            {"title": ""},
            {"effective_from": "yesterday"},
            {"owner": "someone"},  # unknown field
        ):
            r = await c.post(EVIDENCE, json={**ok, **bad})
            assert_error(r, 422, "VALIDATION_ERROR")
        other_team = (
            await admin.post("/api/v1/users/teams", json={"name": "x" + z(datetime.now(UTC))})
        ).json()
        assert_error(
            await c.post(EVIDENCE, json={**ok, "team_id": other_team["id"]}), 404, "NOT_FOUND"
        )

        now = datetime.now(UTC)
        good = {"framework": "iso27001", "period_start": z(Q1[0]), "period_end": z(Q1[1])}
        for bad in (
            {"framework": "pci-dss"},
            {"period_end": z(Q1[0])},  # not after the start
            {"period_start": z(now + timedelta(days=1)), "period_end": z(now + timedelta(days=9))},
            {"period_start": z(now - timedelta(days=4 * 366))},  # longer than three years
            {"period_start": "soon"},
        ):
            r = await c.post(f"{REPORTS}/generate", json={**good, **bad})
            assert_error(r, 422, "VALIDATION_ERROR")
        r = await c.get(
            f"{FRAMEWORKS}/iso27001/assessment", params={"start": z(Q1[1]), "end": z(Q1[0])}
        )
        assert_error(r, 422, "VALIDATION_ERROR")
        assert_error(await c.delete(f"{EVIDENCE}/2147483647"), 404, "NOT_FOUND")
    assert await stored(api) == before


async def test_a_viewer_reads_but_cannot_generate_or_upload(
    api: Api, admin: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    viewer = await role_user(api, admin_headers, "viewer")
    evidence = await add_evidence(
        admin,
        control_ids=["capacity-monitoring"],
        effective_from="2026-01-01",
        effective_to="2026-06-30",
    )
    assert evidence["team_id"] is None  # an admin's default: the whole installation
    report = await admin.post(
        f"{REPORTS}/generate",
        json={"framework": "nist-csf", "period_start": z(Q1[0]), "period_end": z(Q1[1])},
    )
    assert report.status_code == 201, report.text
    before = await stored(api)
    async with viewer.client(api) as c:
        assert (await c.get(FRAMEWORKS)).status_code == 200
        assessed = await assess(c, "nist-csf", *Q1)
        assert requirement(assessed, "PR.IR-04")["status"] == "met"  # installation-wide
        assert (await c.get(f"{EVIDENCE}/{evidence['id']}")).status_code == 200
        assert (await c.get(REPORTS)).status_code == 200
        body = {"framework": "nist-csf", "period_start": z(Q1[0]), "period_end": z(Q1[1])}
        assert_error(await c.post(f"{REPORTS}/generate", json=body), 403, "FORBIDDEN")
        upload = {
            "title": "x",
            "control_ids": ["security-policy"],
            "effective_from": "2026-01-01",
            "effective_to": "2026-02-01",
            "description": "d",
        }
        assert_error(await c.post(EVIDENCE, json=upload), 403, "FORBIDDEN")
        assert_error(await c.delete(f"{EVIDENCE}/{evidence['id']}"), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        assert_error(await anonymous.get(FRAMEWORKS), 401, "UNAUTHORIZED")
        assert_error(await anonymous.get(REPORTS), 401, "UNAUTHORIZED")
        assert_error(await anonymous.post(f"{REPORTS}/generate", json=body), 401, "UNAUTHORIZED")
        assert_error(await anonymous.post(EVIDENCE, json=upload), 401, "UNAUTHORIZED")
        assert_error(await anonymous.delete(f"{EVIDENCE}/{evidence['id']}"), 401, "UNAUTHORIZED")
    assert await stored(api) == before


async def test_teams_see_their_own_evidence_and_reports(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    a = await own_team(api, admin, make_user)
    b = await own_team(api, admin, make_user)
    wide = await add_evidence(
        admin,
        control_ids=["asset-inventory"],
        effective_from="2025-01-01",
        effective_to="2027-01-01",
    )
    async with a.client as ca, b.client as cb:
        mine = await add_evidence(
            ca,
            control_ids=["supplier-review"],
            effective_from="2025-01-01",
            effective_to="2027-01-01",
        )
        report = (
            await ca.post(
                f"{REPORTS}/generate",
                json={"framework": "iso27001", "period_start": z(Q1[0]), "period_end": z(Q1[1])},
            )
        ).json()
        assert requirement(report["assessment"], "A.5.19")["status"] == "met"

        assert_error(await cb.get(f"{EVIDENCE}/{mine['id']}"), 404, "NOT_FOUND")
        assert_error(await cb.delete(f"{EVIDENCE}/{mine['id']}"), 404, "NOT_FOUND")
        assert_error(await cb.get(f"{REPORTS}/{report['id']}"), 404, "NOT_FOUND")
        assert_error(await cb.get(f"{REPORTS}/{report['id']}/download"), 404, "NOT_FOUND")
        ids = [e["id"] for e in (await cb.get(EVIDENCE, params={"limit": 1000})).json()["items"]]
        assert mine["id"] not in ids and wide["id"] in ids
        assert report["id"] not in [r["id"] for r in (await cb.get(REPORTS)).json()["items"]]
        theirs = await assess(cb, "iso27001", *Q1)
        assert requirement(theirs, "A.5.19")["status"] == "no_evidence"
        assert requirement(theirs, "A.5.9")["status"] == "met"  # the installation-wide one
        # Installation-wide evidence is removed only by someone who sees every team.
        assert_error(await ca.delete(f"{EVIDENCE}/{wide['id']}"), 403, "FORBIDDEN")
    # An admin sees both and may narrow a report to one team.
    assert (await admin.get(f"{EVIDENCE}/{mine['id']}")).status_code == 200
    narrowed = await admin.post(
        f"{REPORTS}/generate",
        json={
            "framework": "iso27001",
            "period_start": z(Q1[0]),
            "period_end": z(Q1[1]),
            "team_id": b.id,
        },
    )
    assert narrowed.status_code == 201, narrowed.text
    assert narrowed.json()["team_id"] == b.id
    assert requirement(narrowed.json()["assessment"], "A.5.19")["status"] == "no_evidence"
    async with b.user.client(api) as cb:
        assert (await cb.get(f"{REPORTS}/{narrowed.json()['id']}")).status_code == 200
    assert (await admin.delete(f"{EVIDENCE}/{wide['id']}")).status_code == 204

"""The security API on SQLite and PostgreSQL: imports that deduplicate, close what is
fixed and reopen what comes back; broken and oversized reports refused with nothing
kept; risk acceptance by a second person that expires on an injected clock; overdue
events; both views, their filters and the metrics; assets and servers as assets; team
scoping and who may do what."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from opscenter.core.events import Event
from opscenter.models import Finding, SecurityImport
from opscenter.security.plugin import watch_once
from tests.conftest import ADMIN_PASSWORD, Api, UserFactory
from tests.core.helpers import assert_error, role_user
from tests.schedules.helpers import make_server, uid
from tests.security.helpers import (
    ASSETS,
    FIXTURES,
    IMPORTS,
    VULNS,
    Vuln,
    findings,
    grype,
    imported,
    new_asset,
    osv,
    own_team,
    trivy,
    upload,
)

V31 = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"
A = Vuln("CVE-2024-0001", "openssl", "3.0.11", "CRITICAL", "3.0.13", V31)
B = Vuln("CVE-2024-0002", "zlib1g", "1.2.13", "HIGH")
C = Vuln("CVE-2024-0003", "curl", "7.88.1", "LOW", "7.88.2")


async def stored(api: Api, asset_id: int) -> tuple[int, int]:
    """Findings and imports of an asset, counted in the database itself."""
    async with api.app.state.ctx.db.read_session() as session:
        found = await session.scalar(
            select(func.count()).select_from(Finding).where(Finding.asset_id == asset_id)
        )
        imports = await session.scalar(
            select(func.count())
            .select_from(SecurityImport)
            .where(SecurityImport.asset_id == asset_id)
        )
    return int(found or 0), int(imports or 0)


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["identifier"]: f for f in items}


async def test_reimport_closes_what_is_fixed_and_reopens_what_comes_back(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        asset = await new_asset(c)
        first = await imported(c, trivy([A, B, C, A]), asset_id=asset["id"])
        assert (first["scanner"], first["reported"], first["new"], first["closed"]) == (
            "trivy",
            3,  # A twice in one report is one finding
            3,
            0,
        )
        again = await imported(c, trivy([A, B, C]), asset_id=asset["id"])
        assert (again["new"], again["reopened"], again["closed"]) == (0, 0, 0)
        # grype on the same asset reports C too: a finding of its own, never closing trivy's
        other = await imported(c, grype([C]), asset_id=asset["id"], scanner="grype")
        assert other["new"] == 1

        fixed = await imported(c, trivy([A, B]), asset_id=asset["id"])
        assert (fixed["new"], fixed["reopened"], fixed["closed"]) == (0, 0, 1)
        mine = [f for f in await findings(c, asset_id=asset["id"]) if f["scanner"] == "trivy"]
        state = {f["identifier"]: f["status"] for f in mine}
        assert state == {A.id: "open", B.id: "open", C.id: "fixed"}
        c_row = by_id(mine)[C.id]
        assert c_row["fixed_at"] is not None and c_row["sla_state"] == "met"
        grype_c = await findings(c, asset_id=asset["id"], scanner="grype")
        assert [f["status"] for f in grype_c] == ["open"]

        back = await imported(c, trivy([A, B, C]), asset_id=asset["id"])
        assert (back["new"], back["reopened"], back["closed"]) == (0, 1, 0)
        row = by_id(await findings(c, asset_id=asset["id"], scanner="trivy"))[C.id]
        assert row["status"] == "open" and row["fixed_at"] is None
        assert row["id"] == c_row["id"]  # the same finding, by its fingerprint

        a_row = by_id(await findings(c, asset_id=asset["id"]))[A.id]
        assert (a_row["cvss_score"], a_row["severity"], a_row["fixed_version"]) == (
            7.5,
            "critical",
            "3.0.13",
        )
        assert a_row["first_seen"] < a_row["last_seen"]
        imports = (await c.get(IMPORTS)).json()
        assert imports["total"] == 5 and imports["items"][0]["id"] == back["id"]
    assert await stored(api, asset["id"]) == (4, 5)


async def test_every_format_through_the_api(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        asset = await new_asset(c, kind="repository")
        bandit = await imported(
            c, (FIXTURES / "bandit.sarif").read_bytes(), asset_id=asset["id"], filename="b.sarif"
        )
        assert (bandit["scanner"], bandit["new"], bandit["filename"]) == ("sarif", 6, "b.sarif")
        ruff = await imported(c, (FIXTURES / "ruff.sarif").read_bytes(), asset_id=asset["id"])
        # the same scanner (sarif), another report: bandit's findings are closed by ruff's
        assert (ruff["new"], ruff["closed"]) == (4, 6)
        grype_import = await imported(c, grype([A]), asset_id=asset["id"])
        osv_import = await imported(c, osv([B]), asset_id=asset["id"], scanner="osv")
        assert (grype_import["scanner"], osv_import["scanner"]) == ("grype", "osv")
        shell = by_id(await findings(c, asset_id=asset["id"], scanner="sarif", status="open"))
        assert shell["S602"]["location"].endswith("app.py:7")


async def test_broken_oversized_and_misaddressed_reports_keep_nothing(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    spool = Path(api.settings.data_dir) / "tmp"
    async with team.client as c:
        asset = await new_asset(c)
        await imported(c, trivy([A]), asset_id=asset["id"])
        broken = trivy([A, B]).replace(b'"PkgName": "zlib1g", ', b"")
        body = assert_error(
            await upload(c, broken, asset_id=asset["id"]), 422, "INVALID_SECURITY_REPORT"
        )
        assert "Results[0].Vulnerabilities[1].PkgName: is missing" in body["detail"]
        # the first finding of that report was fine, and still nothing of it was kept:
        # A is not seen again, B not added, nothing closed
        assert_error(
            await upload(c, trivy([B]), asset_id=asset["id"], scanner="grype"),
            422,
            "INVALID_SECURITY_REPORT",
        )
        assert_error(
            await upload(c, b"not json", asset_id=asset["id"]), 422, "INVALID_SECURITY_REPORT"
        )
        settings = api.app.state.ctx.settings
        saved, settings.security_import_max_bytes = settings.security_import_max_bytes, 2048
        try:
            big = trivy([Vuln(f"CVE-2024-{i:05d}", "pkg", "1") for i in range(40)])
            assert_error(await upload(c, big, asset_id=asset["id"]), 413, "PAYLOAD_TOO_LARGE")
        finally:
            settings.security_import_max_bytes = saved
        assert_error(await upload(c, trivy([B])), 422, "VALIDATION_ERROR")  # no asset
        assert_error(
            await upload(c, trivy([B]), asset_id=asset["id"], server_id=1), 422, "VALIDATION_ERROR"
        )
        assert_error(
            await upload(c, trivy([B]), asset_id=asset["id"], scanner="nessus"),
            422,
            "VALIDATION_ERROR",
        )
        assert_error(await upload(c, trivy([B]), asset_id=2**31 - 1), 404, "NOT_FOUND")
        as_json = await c.post(IMPORTS, json={"asset_id": asset["id"]})
        assert_error(as_json, 415, "UNSUPPORTED_MEDIA_TYPE")
        rows = await findings(c, asset_id=asset["id"])
        assert [(f["identifier"], f["status"]) for f in rows] == [(A.id, "open")]
        assert rows[0]["first_seen"] == rows[0]["last_seen"]
    assert await stored(api, asset["id"]) == (1, 1)
    assert not list(spool.glob("security-*"))  # no spooled report left behind


async def test_risk_acceptance_needs_a_second_person_and_expires(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    approver = await make_user("operator", team_ids=[team.id])
    ctx = api.app.state.ctx
    async with team.client as c, approver.client(api) as other:
        asset = await new_asset(c)
        await imported(c, trivy([A, B]), asset_id=asset["id"])
        rows = by_id(await findings(c, asset_id=asset["id"]))
        finding, due = rows[B.id], datetime.fromisoformat(rows[B.id]["due_at"])
        url = f"{VULNS}/{finding['id']}/risk-acceptance"
        now = datetime.now(UTC)
        until = now + timedelta(days=10)

        assert_error(
            await c.post(url, json={"reason": "x", "expires_at": until.isoformat()}),
            422,
            "VALIDATION_ERROR",
        )
        past = (now - timedelta(days=1)).isoformat()
        assert_error(
            await c.post(url, json={"reason": "vendor patch due", "expires_at": past}),
            422,
            "VALIDATION_ERROR",
        )
        assert_error(await c.post(f"{url}/approve"), 409, "CONFLICT")  # nothing asked yet
        asked = await c.post(
            url, json={"reason": "vendor patch due", "expires_at": until.isoformat()}
        )
        assert asked.status_code == 200, asked.text
        assert asked.json()["status"] == "open"
        assert asked.json()["acceptance_requested_by"] == team.operator.id
        assert_error(await c.post(f"{url}/approve"), 403, "FORBIDDEN")  # not one's own
        approved = await other.post(f"{url}/approve")
        assert approved.status_code == 200, approved.text
        assert (approved.json()["status"], approved.json()["sla_state"]) == (
            "risk_accepted",
            "paused",
        )
        assert approved.json()["acceptance_approved_by"] == approver.id
        accepted_at = datetime.now(UTC)

        # before the expiry, the clock changes nothing
        async with ctx.events.subscribe() as queue:
            tick = await watch_once(ctx, until - timedelta(minutes=1))
        assert finding["id"] not in tick.expired.get(team.id, [])
        # after it, the finding reopens and its due date moves by the time it stood still
        async with ctx.events.subscribe() as queue:
            tick = await watch_once(ctx, until + timedelta(minutes=1))
            events = drain(queue)
        assert finding["id"] in tick.expired[team.id]
        assert any(
            e.type == "security.acceptance_expired" and e.data["finding_id"] == finding["id"]
            for e in events
        )
        row = (await c.get(f"{VULNS}/{finding['id']}")).json()
        assert row["status"] == "open" and row["acceptance_expires_at"] is None
        moved = datetime.fromisoformat(row["due_at"]) - due
        assert timedelta(0) < until - accepted_at <= moved <= until - now + timedelta(seconds=5)

        # past the due date: one overdue event, only once
        late = datetime.fromisoformat(row["due_at"]) + timedelta(days=1)
        async with ctx.events.subscribe() as queue:
            await watch_once(ctx, late)
            await watch_once(ctx, late + timedelta(hours=1))
            events = drain(queue)
        overdue = [
            e
            for e in events
            if e.type == "security.finding_overdue" and finding["id"] in e.data["finding_ids"]
        ]
        assert len(overdue) == 1 and overdue[0].team_id == team.id
        assert overdue[0].data["severity"] == "warning"  # the level alert policies hear
        assert_error(
            await c.post(url, json={"reason": "r", "expires_at": until.isoformat(), "extra": 1}),
            422,
            "VALIDATION_ERROR",
        )


def drain(queue: asyncio.Queue[Event]) -> list[Event]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


async def test_views_filters_and_metrics(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        asset = await new_asset(c)
        await imported(c, trivy([A, B, C]), asset_id=asset["id"])
        await imported(c, trivy([A, B]), asset_id=asset["id"])  # C fixed
        seed_002 = (await c.get(VULNS, params={"team_id": team.id})).json()
        seed_004 = await c.get("/api/v1/secops/vulnerabilities", params={"team_id": team.id})
        assert seed_004.status_code == 200
        assert seed_002["items"] == seed_004.json()["items"]
        assert [f["severity"] for f in seed_002["items"]] == ["critical", "high", "low"]
        assert [f["identifier"] for f in await findings(c, team_id=team.id, severity="high")] == [
            B.id
        ]
        assert [f["identifier"] for f in await findings(c, team_id=team.id, status="fixed")] == [
            C.id
        ]
        assert await findings(c, team_id=team.id, overdue="true") == []
        assert len(await findings(c, team_id=team.id, overdue="false")) == 3
        assert_error(await c.get(VULNS, params={"severity": "severe"}), 422, "VALIDATION_ERROR")

        metrics = (await c.get("/api/v1/security/metrics", params={"team_id": team.id})).json()
        assert metrics["open_total"] == 2
        counts = {s["severity"]: s["count"] for s in metrics["open_by_severity"]}
        assert counts == {"critical": 1, "high": 1, "medium": 0, "low": 0, "info": 0}
        assert metrics["sla_compliance_percent"] == 100.0
        assert 0 <= metrics["mean_time_to_remediate_days"] < 0.01
        assert len(metrics["weeks"]) == 12
        this_week = metrics["weeks"][-1]
        assert (this_week["opened"], this_week["fixed"], this_week["open_at_end"]) == (3, 1, 2)
        sla = (await c.get("/api/v1/security/sla")).json()["days_to_fix"]
        assert sla["critical"] == 7
        critical = by_id(seed_002["items"])[A.id]
        first_seen = datetime.fromisoformat(critical["first_seen"])
        assert datetime.fromisoformat(critical["due_at"]) - first_seen == timedelta(days=7)


async def test_assets_crud_and_bad_input(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        name = uid("web-")
        body = {
            "name": name,
            "kind": "certificate",
            "environment": "staging",
            "criticality": "high",
            "address": "shop.example.com",
            "ports": [443],
            "tags": {"owner": "web"},
        }
        created = await c.post(ASSETS, json=body)
        assert created.status_code == 201, created.text
        asset = created.json()
        assert {k: asset[k] for k in body} == body
        assert (asset["team_id"], asset["server_id"], asset["open_findings"]) == (team.id, None, 0)
        assert_error(await c.post(ASSETS, json=body), 409, "CONFLICT")
        for bad in (
            {**body, "name": uid("x-"), "ports": [70000]},
            {**body, "name": uid("x-"), "kind": "printer"},
            {**body, "name": ""},
            {**body, "name": uid("x-"), "owner": "me"},
            {**body, "name": "server:1"},  # the servers' own rows
        ):
            assert_error(await c.post(ASSETS, json=bad), 422, "VALIDATION_ERROR")
        url = f"{ASSETS}/{asset['id']}"
        changed = await c.put(url, json={"criticality": "critical", "ports": [443, 8443]})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["criticality"], changed.json()["ports"]) == ("critical", [443, 8443])
        assert_error(await c.put(url, json={"ports": [0]}), 422, "VALIDATION_ERROR")
        await imported(c, trivy([A]), asset_id=asset["id"])
        assert (await c.get(url)).json()["open_findings"] == 1
        listed = (await c.get(ASSETS, params={"team_id": team.id})).json()
        assert [a["name"] for a in listed["items"]] == [name]
        assert (await c.delete(url)).status_code == 204
        assert_error(await c.get(url), 404, "NOT_FOUND")
    assert await stored(api, asset["id"]) == (0, 0)  # its findings and imports went with it


async def test_a_server_is_an_asset_by_itself_and_follows_it(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        server = await make_server(c, environment="production")
        listed = (await c.get(ASSETS, params={"team_id": team.id})).json()["items"]
        assert [(a["id"], a["server_id"], a["name"], a["kind"]) for a in listed] == [
            (None, server["id"], server["name"], "database")
        ]
        report = await imported(c, trivy([A]), server_id=server["id"])
        renamed = uid("db-")
        r = await c.put(f"/api/v1/servers/{server['id']}", json={"name": renamed})
        assert r.status_code == 200, r.text
        [asset] = (await c.get(ASSETS, params={"team_id": team.id})).json()["items"]
        assert (asset["id"], asset["name"], asset["open_findings"]) == (
            report["asset_id"],
            renamed,
            1,
        )
        assert [f["asset_name"] for f in await findings(c, team_id=team.id)] == [renamed]
        # the server's own fields are the server's: only criticality is the asset's
        url = f"{ASSETS}/{asset['id']}"
        assert_error(await c.put(url, json={"name": "other"}), 409, "CONFLICT")
        assert (await c.put(url, json={"criticality": "high"})).json()["criticality"] == "high"
        assert_error(await c.delete(url), 409, "CONFLICT")
        assert (await c.delete(f"/api/v1/servers/{server['id']}")).status_code == 204
        assert (await c.get(ASSETS, params={"team_id": team.id})).json()["items"] == []
        assert await findings(c, team_id=team.id) == []
    assert await stored(api, report["asset_id"]) == (0, 0)


async def test_team_scoping_and_roles(
    api: Api, admin: httpx.AsyncClient, admin_headers: dict[str, str], make_user: UserFactory
) -> None:
    mine = await own_team(api, admin, make_user)
    theirs = await own_team(api, admin, make_user)
    viewer = await make_user("viewer", team_ids=[mine.id])
    async with mine.client as c:
        asset = await new_asset(c)
        await imported(c, trivy([A]), asset_id=asset["id"])
        [finding] = await findings(c, asset_id=asset["id"])
    async with theirs.client as t:
        assert await findings(t, asset_id=asset["id"]) == []
        assert_error(await t.get(f"{VULNS}/{finding['id']}"), 404, "NOT_FOUND")
        assert_error(await t.get(f"{ASSETS}/{asset['id']}"), 404, "NOT_FOUND")
        assert_error(await t.put(f"{ASSETS}/{asset['id']}", json={"ports": []}), 404, "NOT_FOUND")
        assert_error(await upload(t, trivy([B]), asset_id=asset["id"]), 404, "NOT_FOUND")
        assert all(a["id"] != asset["id"] for a in (await t.get(ASSETS)).json()["items"])
        accept = await t.post(
            f"{VULNS}/{finding['id']}/risk-acceptance",
            json={"reason": "not ours", "expires_at": "2099-01-01T00:00:00Z"},
        )
        assert_error(accept, 404, "NOT_FOUND")
        assert_error(
            await t.post(ASSETS, json={"name": "x", "kind": "host", "team_id": mine.id}),
            404,
            "NOT_FOUND",
        )
    async with viewer.client(api) as v:
        assert [f["id"] for f in await findings(v, asset_id=asset["id"])] == [finding["id"]]
        assert (await v.get("/api/v1/security/metrics")).status_code == 200
        assert_error(await upload(v, trivy([B]), asset_id=asset["id"]), 403, "FORBIDDEN")
        assert_error(await v.post(ASSETS, json={"name": "x", "kind": "host"}), 403, "FORBIDDEN")
        assert_error(await v.delete(f"{ASSETS}/{asset['id']}"), 403, "FORBIDDEN")
        assert_error(
            await v.post(
                f"{VULNS}/{finding['id']}/risk-acceptance",
                json={"reason": "viewer", "expires_at": "2099-01-01T00:00:00Z"},
            ),
            403,
            "FORBIDDEN",
        )
    async with api.client() as anonymous:
        assert_error(await anonymous.get(VULNS), 401, "UNAUTHORIZED")
        assert_error(await upload(anonymous, trivy([B]), asset_id=asset["id"]), 401, "UNAUTHORIZED")
        assert_error(
            await anonymous.post(ASSETS, json={"name": "x", "kind": "host"}), 401, "UNAUTHORIZED"
        )
    shared_viewer = await role_user(api, admin_headers, "viewer")  # in no team: sees nothing
    async with shared_viewer.client(api) as nobody:
        assert await findings(nobody, asset_id=asset["id"]) == []
    assert await stored(api, asset["id"]) == (1, 1)


async def test_pages_take_blank_and_unknown_filters(api: Api) -> None:
    async with api.client() as browser:  # the session cookie, as a browser has it
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        assert (await browser.post("/api/v1/auth/login", json=login)).status_code == 200
        for query in ("severity=&status=&asset=&overdue=", "severity=severe&asset=x&overdue=no"):
            r = await browser.get(f"/security?{query}")
            assert r.status_code == 200, r.text
            assert 'id="security-import"' in r.text
        for page in ("/security/assets", "/security/metrics"):
            assert (await browser.get(page)).status_code == 200


async def test_concurrent_imports_of_one_asset_never_duplicate(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    report = trivy([Vuln(f"CVE-2025-{i:05d}", f"lib{i}", "1.0") for i in range(300)])
    async with team.client as c:
        asset = await new_asset(c)
        answers = await asyncio.gather(*(upload(c, report, asset_id=asset["id"]) for _ in range(3)))
        codes = sorted(r.status_code for r in answers)
        assert codes[0] == 201 and set(codes) <= {201, 409}, [r.text for r in answers]
        for r in answers:
            if r.status_code == 409:
                assert_error(r, 409, "CONFLICT")
        assert sum(r.json()["new"] for r in answers if r.status_code == 201) == 300
    found, imports = await stored(api, asset["id"])
    assert (found, imports) == (300, codes.count(201))

"""Policies and scans on SQLite and PostgreSQL: the built-in policies with their
references; admins' changes validated and audited; posture findings that appear and close
as the installation changes (API keys, settings, a disabled policy) and reopen; the
surface of a local TLS server whose certificate expires in 5 days, then is renewed;
nothing probed off the allow-list; who may do what."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from opscenter.models import (
    AuditLog,
    Backup,
    BackupStatus,
    SecurityPolicy,
    SecurityScan,
    StorageProvider,
    SurfaceAllow,
    User,
)
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error, role_user
from tests.schedules.helpers import make_schedule, make_server, uid
from tests.security.helpers import findings, new_asset
from tests.security.scan_helpers import (
    ALLOW,
    POLICIES,
    SCAN,
    policy,
    scanned,
    self_signed,
    tls_server,
)


async def count(api: Api, model: Any) -> int:
    async with api.app.state.ctx.db.read_session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def changes(api: Api) -> int:
    """Audited security changes (refusals are audited too, as refusals)."""
    async with api.app.state.ctx.db.read_session() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.action.like("security.%"), AuditLog.outcome == "success")
        )
    return int(found or 0)


async def new_team(admin: httpx.AsyncClient) -> int:
    r = await admin.post("/api/v1/users/teams", json={"name": uid("scan-")})
    assert r.status_code == 201, r.text
    team_id: int = r.json()["id"]
    return team_id


def mine(items: list[dict[str, Any]], key: str, subject: str) -> dict[str, Any]:
    matching = [f for f in items if f["identifier"] == key and f["component"] == subject]
    assert len(matching) == 1, [(f["identifier"], f["component"], f["status"]) for f in items]
    found: dict[str, Any] = matching[0]
    return found


async def test_builtin_policies_carry_their_references(admin: httpx.AsyncClient) -> None:
    r = await admin.get(POLICIES)
    assert r.status_code == 200, r.text
    by_key = {p["key"]: p for p in r.json()["items"]}
    assert {
        "posture.admin-password-age",
        "posture.api-key-expiry",
        "posture.backup-encryption",
        "posture.backup-rpo",
        "posture.escrow-key",
        "posture.inactive-users",
        "posture.weak-settings",
        "surface.tls-expiry",
        "surface.tls-protocol",
        "surface.tls-chain",
        "surface.tls-self-signed",
        "surface.open-ports",
    } <= set(by_key)
    backup = by_key["posture.backup-encryption"]
    assert backup["builtin"] and backup["kind"] == "posture"
    assert {"framework": "iso27001:2022", "control": "A.8.13"} in backup["compliance"]
    assert {"framework": "nist-csf-2.0", "control": "PR.DS-11"} in backup["compliance"]
    assert by_key["posture.api-key-expiry"]["attack"] == ["T1528", "T1550.001"]
    assert by_key["surface.tls-expiry"]["parameters"] == {"warn_days": 30, "critical_days": 7}
    one = await admin.get(f"{POLICIES}/{backup['id']}")
    assert one.json() == backup
    assert_error(await admin.get(f"{POLICIES}/999999"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"parameters": {"max_days": 0}}, "VALIDATION_ERROR"),  # below 1
        ({"parameters": {"days": 5}}, "VALIDATION_ERROR"),  # another check's parameter
        ({"attack": ["T12"]}, "VALIDATION_ERROR"),
        ({"compliance": [{"framework": "soc2", "control": "A.8.13"}]}, "VALIDATION_ERROR"),
        ({"compliance": [{"framework": "pci", "control": "1.1"}]}, "VALIDATION_ERROR"),
        ({"severity": "urgent"}, "VALIDATION_ERROR"),
        ({"owner": "me"}, "VALIDATION_ERROR"),
    ],
)
async def test_policy_update_refuses_bad_input(
    api: Api, admin: httpx.AsyncClient, body: dict[str, Any], code: str
) -> None:
    before = await policy(admin, "posture.admin-password-age")
    r = await admin.put(f"{POLICIES}/{before['id']}", json=body)
    assert_error(r, 422, code)
    assert await policy(admin, "posture.admin-password-age") == before


async def test_policy_update_and_custom_policy(api: Api, admin: httpx.AsyncClient) -> None:
    p = await policy(admin, "posture.inactive-users")
    audits = await changes(api)
    r = await admin.put(
        f"{POLICIES}/{p['id']}",
        json={"severity": "medium", "parameters": {"days": 120}, "attack": ["T1078.003"]},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["severity"], r.json()["parameters"], r.json()["attack"]) == (
        "medium",
        {"days": 120},
        ["T1078.003"],
    )
    assert await changes(api) == audits + 1
    back = await admin.put(
        f"{POLICIES}/{p['id']}",
        json={"severity": p["severity"], "parameters": p["parameters"], "attack": p["attack"]},
    )
    assert back.json()["parameters"] == {"days": 90}

    key = uid("custom.ports-").lower()
    body = {
        "key": key,
        "check": "open_ports",
        "title": "No database ports",
        "severity": "high",
        "parameters": {"ports": [5432, 3306]},
        "compliance": [{"framework": "soc2", "control": "CC6.6"}],
        "attack": ["T1046"],
        "enabled": False,
    }
    made = await admin.post(POLICIES, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["parameters"] == {"ports": [5432, 3306], "timeout_seconds": 0.5}
    assert (made.json()["builtin"], made.json()["kind"]) == (False, "surface")
    assert_error(await admin.post(POLICIES, json=body), 409, "CONFLICT")
    policies = await count(api, SecurityPolicy)
    bad = {**body, "key": key + "x", "check": "run_shell"}
    assert_error(await admin.post(POLICIES, json=bad), 422, "VALIDATION_ERROR")
    bad = {**body, "key": key + "x", "parameters": {"ports": [70000]}}
    assert_error(await admin.post(POLICIES, json=bad), 422, "VALIDATION_ERROR")
    assert await count(api, SecurityPolicy) == policies


async def test_who_may_change_policies_and_scan(
    api: Api, admin: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    p = await policy(admin, "posture.escrow-key")
    scans, audits = await count(api, SecurityScan), await changes(api)
    for role in ("viewer", "operator"):
        user = await role_user(api, admin_headers, role)
        async with user.client(api) as c:
            assert (await c.get(POLICIES)).status_code == 200
            assert_error(
                await c.put(f"{POLICIES}/{p['id']}", json={"enabled": False}), 403, "FORBIDDEN"
            )
            assert_error(await c.post(SCAN, json={"scope": "posture"}), 403, "FORBIDDEN")
            assert_error(await c.put(ALLOW, json={"entries": ["10.0.0.0/8"]}), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        assert_error(await anonymous.post(SCAN, json={}), 401, "UNAUTHORIZED")
        assert_error(await anonymous.get(POLICIES), 401, "UNAUTHORIZED")
        assert_error(await anonymous.put(f"{POLICIES}/{p['id']}", json={}), 401, "UNAUTHORIZED")
    assert await policy(admin, "posture.escrow-key") == p
    assert await count(api, SecurityScan) == scans
    assert await changes(api) == audits


async def test_scan_refuses_bad_input(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await new_team(admin)
    other = await new_team(admin)
    operator = await make_user("operator", team_ids=[other])
    async with operator.client(api) as c:
        theirs = await new_asset(c, address="127.0.0.1")
    scans = await count(api, SecurityScan)
    for body, status, code in [
        ({"scope": "everything", "team_id": team}, 422, "VALIDATION_ERROR"),
        ({"asset_ids": [0], "team_id": team}, 422, "VALIDATION_ERROR"),
        ({"asset_ids": list(range(1, 150)), "team_id": team}, 422, "VALIDATION_ERROR"),
        ({"team_id": 999999}, 404, "NOT_FOUND"),
    ]:
        assert_error(await admin.post(SCAN, json=body), status, code)
    viewer = await make_user("viewer", team_ids=[team])
    async with viewer.client(api) as c:
        assert_error(await c.get(f"/api/v1/secops/assets/{theirs['id']}"), 404, "NOT_FOUND")
    entries = await count(api, SurfaceAllow)
    r = await admin.put(ALLOW, json={"entries": ["10.0.0.0/8", "not a host!"]})
    assert_error(r, 422, "VALIDATION_ERROR")
    assert await count(api, SurfaceAllow) == entries
    assert await count(api, SecurityScan) == scans


async def test_posture_findings_follow_the_installation(
    api: Api, admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = await new_team(admin)
    key = (await admin.post("/api/v1/admin/tokens", json={"name": uid("k-")})).json()
    subject = f"api_key:{key['id']}"
    first = await scanned(api, admin, scope="posture", team_id=team)
    assert first["status"] == "succeeded" and first["checks_run"] >= 7
    assert first["targets_probed"] == 0
    listed = await findings(admin, team_id=team, status="open")
    no_expiry = mine(listed, "posture.api-key-expiry", subject)
    assert (no_expiry["scanner"], no_expiry["severity"]) == ("posture", "medium")
    assert no_expiry["title"] == f"API key {key['name']!r} never expires"
    assert any(
        r["finding_id"] == no_expiry["id"] and r["policy"] == "posture.api-key-expiry"
        for r in first["results"]
    )
    # The tests run with rate limiting off: a weak setting, until it is turned on.
    assert mine(listed, "posture.weak-settings", "setting:rate_limit")["status"] == "open"
    only = await findings(admin, team_id=team, scanner="posture")
    assert only and {f["scanner"] for f in only} == {"posture"}

    assert (await admin.delete(f"/api/v1/admin/tokens/{key['id']}")).status_code == 204
    monkeypatch.setattr(api.app.state.ctx.settings, "rate_limit_enabled", True)
    second = await scanned(api, admin, scope="posture", team_id=team)
    assert second["closed"] >= 2
    every = await findings(admin, team_id=team)
    assert mine(every, "posture.api-key-expiry", subject)["status"] == "fixed"
    assert mine(every, "posture.weak-settings", "setting:rate_limit")["status"] == "fixed"

    monkeypatch.setattr(api.app.state.ctx.settings, "rate_limit_enabled", False)
    third = await scanned(api, admin, scope="posture", team_id=team)
    assert third["reopened"] >= 1
    back = mine(await findings(admin, team_id=team), "posture.weak-settings", "setting:rate_limit")
    assert back["status"] == "open"
    assert back["id"] == mine(listed, "posture.weak-settings", "setting:rate_limit")["id"]


async def test_tls_certificate_expiring_in_five_days(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    team = await new_team(admin)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed(tmp_path, 5))
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    plain_port = listener.sockets[0].getsockname()[1]
    ports_key = uid("t.ports-").lower()
    custom = await admin.post(
        POLICIES,
        json={
            "key": ports_key,
            "check": "open_ports",
            "title": "The test's own port list",
            "parameters": {"ports": [plain_port], "timeout_seconds": 5},
        },
    )
    assert custom.status_code == 201, custom.text
    saved = (await admin.get(ALLOW)).json()["entries"]
    try:
        async with tls_server(context) as port:
            asset = await new_asset(
                admin, address="127.0.0.1", ports=[port], team_id=team, name=uid("tls-")
            )
            # Nothing is allowed yet: nothing is probed, nothing found.
            assert (await admin.put(ALLOW, json={"entries": []})).status_code == 200
            blocked = await scanned(
                api, admin, scope="surface", asset_ids=[asset["id"]], team_id=team
            )
            assert (blocked["targets_probed"], blocked["targets_skipped"]) == (0, ["127.0.0.1"])
            assert await findings(admin, asset_id=asset["id"]) == []

            r = await admin.put(ALLOW, json={"entries": ["127.0.0.1/32"]})
            assert r.json()["entries"] == ["127.0.0.1/32"]
            first = await scanned(
                api, admin, scope="surface", asset_ids=[asset["id"]], team_id=team
            )
            assert first["status"] == "succeeded" and first["targets_probed"] == 1
            seen = await findings(admin, asset_id=asset["id"])
            subject = f"127.0.0.1:{port}"
            expiry = mine(seen, "surface.tls-expiry", subject)
            assert expiry["title"] == f"The certificate on {subject} expires in 5 days"
            assert (expiry["severity"], expiry["scanner"]) == ("high", "surface")
            assert mine(seen, "surface.tls-self-signed", subject)["severity"] == "medium"
            assert not [f for f in seen if f["identifier"] == "surface.tls-chain"]
            assert not [f for f in seen if f["identifier"] == "surface.tls-protocol"]
            unlisted = mine(seen, ports_key, f"127.0.0.1:{plain_port}")
            assert unlisted["title"] == f"Port {plain_port} on 127.0.0.1 is open but not declared"

            # Renewed for 400 days and the stray port closed: both close, self-signed stays.
            context.load_cert_chain(*self_signed(tmp_path, 400))
            listener.close()
            await listener.wait_closed()
            second = await scanned(
                api, admin, scope="surface", asset_ids=[asset["id"]], team_id=team
            )
            assert second["closed"] >= 2
            state = {
                (f["identifier"], f["component"]): f["status"]
                for f in await findings(admin, asset_id=asset["id"])
            }
            assert state[("surface.tls-expiry", subject)] == "fixed"
            assert state[(ports_key, f"127.0.0.1:{plain_port}")] == "fixed"
            assert state[("surface.tls-self-signed", subject)] == "open"
    finally:
        listener.close()
        await admin.put(ALLOW, json={"entries": saved})
        await admin.put(f"{POLICIES}/{custom.json()['id']}", json={"enabled": False})


async def test_a_scan_without_a_body_uses_the_defaults(api: Api, admin: httpx.AsyncClient) -> None:
    """The seed's `POST /api/v1/security/scan`, as written: both scopes, the caller's team."""
    r = await admin.post(SCAN)
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) >= {"id", "status", "task_id", "job_id", "status_url"}
    await api.app.state.ctx.runner.wait(body["job_id"], limit_seconds=120)
    done = (await admin.get(body["status_url"])).json()
    assert (done["scope"], done["status"], done["asset_ids"]) == ("both", "succeeded", [])


async def set_rows(api: Api, model: Any, row_id: int, **values: Any) -> None:
    async with api.app.state.ctx.db.write_session() as session:
        await session.execute(update(model).where(model.id == row_id).values(**values))
        await session.commit()


async def test_accounts_age_into_findings_and_out_again(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await new_team(admin)
    boss = await make_user("admin", team_ids=[team])
    now = datetime.now(UTC)
    # Made 100 days ago and last seen 120 days ago (the clock is the rows' own).
    await set_rows(api, User, boss.id, created_at=now - timedelta(days=100))
    await set_rows(api, User, boss.id, last_login=now - timedelta(days=120))
    await scanned(api, admin, scope="posture", team_id=team)
    listed = await findings(admin, team_id=team, status="open")
    age = mine(listed, "posture.admin-password-age", f"user:{boss.id}")
    assert age["title"] == (
        f"Admin {boss.username!r} has not changed their password for 100 days (policy: 90)"
    )
    idle = mine(listed, "posture.inactive-users", f"user:{boss.id}")
    assert idle["title"] == f"User {boss.username!r} has not logged in for 120 days (policy: 90)"
    assert idle["severity"] == "low"

    r = await admin.put(f"/api/v1/users/{boss.id}", json={"password": f"pw-{uid()}-new"})
    assert r.status_code == 200, r.text
    await set_rows(api, User, boss.id, last_login=now)
    await scanned(api, admin, scope="posture", team_id=team)
    every = await findings(admin, team_id=team)
    assert mine(every, "posture.admin-password-age", f"user:{boss.id}")["status"] == "fixed"
    assert mine(every, "posture.inactive-users", f"user:{boss.id}")["status"] == "fixed"


async def test_backups_unencrypted_and_outside_their_rpo(
    api: Api, admin: httpx.AsyncClient
) -> None:
    team = await new_team(admin)
    server = await make_server(admin, team_id=team)
    db = uid("sales_")
    await make_schedule(admin, server["id"], database_name=db, cron_expression="0 3 * * *")
    now = datetime.now(UTC)
    async with api.app.state.ctx.db.write_session() as session:
        storage = await session.scalar(select(StorageProvider.id).limit(1))
        plain = Backup(
            team_id=team, server_id=server["id"], storage_id=storage, database_name=db,
            db_type="postgresql", status=BackupStatus.COMPLETED, is_encrypted=False,
            completed_at=now - timedelta(hours=10),
        )  # fmt: skip
        session.add(plain)
        await session.commit()
        plain_id = plain.id
    target = f"target:{server['id']}/{db}"
    await scanned(api, admin, scope="posture", team_id=team)
    listed = await findings(admin, team_id=team, status="open")
    assert mine(listed, "posture.backup-encryption", target)["title"] == (
        f"1 unencrypted backup(s) of {server['name']}/{db} in the last 30 days"
    )
    # A daily schedule: RPO 2 intervals = 48 h; the one backup is not verified.
    rpo = mine(listed, "posture.backup-rpo", target)
    assert rpo["title"] == (
        f"{server['name']}/{db} has no verified backup within its RPO of 2.0 days (none yet)"
    )
    assert rpo["severity"] == "high"

    # An encrypted, checked backup 5 h ago, and the plain one aged out of the window.
    async with api.app.state.ctx.db.write_session() as session:
        session.add(
            Backup(
                team_id=team, server_id=server["id"], storage_id=storage, database_name=db,
                db_type="postgresql", status=BackupStatus.COMPLETED, is_encrypted=True,
                verification_status="checksum_ok", completed_at=now - timedelta(hours=5),
            )
        )  # fmt: skip
        await session.commit()
    await set_rows(api, Backup, plain_id, completed_at=now - timedelta(days=31))
    await scanned(api, admin, scope="posture", team_id=team)
    every = await findings(admin, team_id=team)
    assert mine(every, "posture.backup-encryption", target)["status"] == "fixed"
    assert mine(every, "posture.backup-rpo", target)["status"] == "fixed"

"""Evidence the platform gathers itself, through the API on SQLite and PostgreSQL: the
backup controls moving from `not_met` to `met` as a real backup completes and passes a
verification (and missing the RPO once the schedule is older than the backup), the
access review from accounts and keys, incident response times against their targets,
and the audit trail's chain."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import update

from opscenter.core.clock import utcnow
from opscenter.models import AuditLog, Incident, Schedule, User
from tests.compliance.helpers import REPORTS, assess, control, own_team, requirement, z
from tests.conftest import ADMIN_PASSWORD, Api, UserFactory
from tests.core.helpers import BACKENDS, own_app
from tests.schedules.helpers import make_schedule, make_server, set_next_run, uid
from tests.verify.helpers import make_backup, verify


def statuses(assessment: dict[str, Any], *ids: str) -> list[str]:
    return [control(assessment, i)["status"] for i in ids]


BACKUP_CONTROLS = ("backup-performed", "backup-verified", "restore-tested", "backup-encrypted")


async def db_update(api: Api, stmt: Any) -> None:
    """Time travel: move a stored moment, as the clock would have."""
    async with api.app.state.ctx.db.write_session() as session:
        await session.execute(stmt)
        await session.commit()


async def test_backup_controls_follow_real_backups_and_verifications(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, source_db: str, tmp_path: Path
) -> None:
    team = await own_team(api, admin, make_user)
    storage = await admin.post(
        "/api/v1/storage/providers",
        json={
            "name": uid("dir-"),
            "type": "local",
            "config": {"path": str(tmp_path)},
            "team_id": team.id,
        },
    )
    assert storage.status_code == 201, storage.text
    now = utcnow()
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    async with team.client as c:
        server = await make_server(c)
        # Every five minutes: an RPO of 7.5 minutes. Its next slot is moved a year away,
        # so the scheduler makes no backup of its own during the test.
        schedule = await make_schedule(
            c, server["id"], database_name=source_db, cron_expression="*/5 * * * *"
        )
        await set_next_run(api, schedule["id"], now + timedelta(days=365))

        nothing = await assess(c, "iso27001", start, end)
        assert statuses(nothing, *BACKUP_CONTROLS) == [
            "not_met",
            "no_evidence",
            "no_evidence",
            "no_evidence",
        ]
        [item] = control(nothing, "backup-performed")["evidence"]
        assert item["title"] == f"{server['name']} / {source_db}"
        assert item["detail"] == "0 completed, 0 failed: no good backup in the period"
        assert requirement(nothing, "A.8.13")["status"] == "not_met"
        # Before the schedule existed there is nothing to judge.
        earlier = await assess(c, "iso27001", now - timedelta(days=10), now - timedelta(days=5))
        assert requirement(earlier, "A.8.13")["status"] == "no_evidence"

        backup_id = await make_backup(api, c, server["id"], source_db)
        encrypted = (await c.get(f"/api/v1/backups/{backup_id}")).json()["is_encrypted"]
        backed_up = await assess(c, "iso27001", start, end)
        assert statuses(backed_up, *BACKUP_CONTROLS) == [
            "met",
            "not_met",  # a backup nobody checked
            "not_met",
            "met" if encrypted else "not_met",
        ]
        [item] = control(backed_up, "backup-performed")["evidence"]
        assert item["detail"].startswith("1 completed, 0 failed; largest gap ")
        assert item["detail"].endswith(", RPO 0.1 h: met")
        assert requirement(backed_up, "A.8.13")["status"] == "partial"
        # SOC 2 A1.2 has the performed, verified and encrypted controls, not the restore test.
        soc2 = await assess(c, "soc2", start, end)
        assert [ctl["id"] for ctl in requirement(soc2, "A1.2")["controls"]] == [
            "backup-performed",
            "backup-verified",
        ]

        result = await verify(api, c, backup_id, test_type="checksum")
        assert result["status"] == "passed", result
        verified = await assess(c, "iso27001", start, end)
        assert statuses(verified, "backup-performed", "backup-verified", "restore-tested") == [
            "met",
            "met",
            "not_met",  # a checksum is no restore test
        ]
        assert control(verified, "backup-verified")["evidence"][0]["detail"] == (
            "1 passed, 0 failed in the period"
        )
        nist = await assess(c, "nist-csf", start, end)
        assert requirement(nist, "RC.RP-03")["status"] == "partial"  # verified, not restored

        # Had the schedule run since two hours ago, an hour of the period passed without a
        # good backup younger than 7.5 minutes: the RPO was missed.
        await db_update(
            api,
            update(Schedule)
            .where(Schedule.id == schedule["id"])
            .values(created_at=now - timedelta(hours=2)),
        )
        late = await assess(c, "iso27001", start, end)
        assert control(late, "backup-performed")["status"] == "not_met"
        assert control(late, "backup-performed")["evidence"][0]["detail"].endswith(": missed")


async def test_access_review_and_sign_in_from_the_accounts(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    idle = await make_user("viewer", team_ids=[team.id])
    now = utcnow()
    await db_update(
        api,
        update(User)
        .where(User.id == idle.id)
        .values(created_at=now - timedelta(days=200), last_login=now - timedelta(days=120)),
    )
    async with team.client as c:
        a = await assess(c, "iso27001", now - timedelta(days=30), now)
    review = control(a, "access-reviewed")
    assert review["status"] == "partial"  # one of two accounts unused for 90 days
    assert [e["detail"] for e in review["evidence"]] == [
        f"2 active, 1 unused for 90 days: {idle.username}",
        "0 active, 0 unused for 90 days",
    ]
    assert control(a, "api-keys-expire")["status"] == "no_evidence"  # the team has no key
    sso = control(a, "single-sign-on")
    assert sso["status"] == "not_met"
    assert sso["evidence"][0]["detail"].startswith("0 of 2 active accounts sign in by SSO")
    # A period that ended before the idle account was created judges one account.
    old = await assess(
        team.user.client(api), "iso27001", now - timedelta(days=260), now - timedelta(days=230)
    )
    assert control(old, "access-reviewed")["evidence"][0]["detail"].startswith("0 active")


async def new_incident(client: httpx.AsyncClient, severity: str, status: str | None) -> int:
    r = await client.post(
        "/api/v1/infra/incidents",
        json={
            "title": f"{severity} incident",
            "description": "Replica lag above threshold",
            "severity": severity,
            "squad": "platform",
            "environment": "production",
        },
    )
    assert r.status_code == 201, r.text
    ident: int = r.json()["id"]
    if status:
        patched = await client.patch(f"/api/v1/infra/incidents/{ident}", json={"status": status})
        assert patched.status_code == 200, patched.text
    return ident


async def test_incident_response_times_against_their_targets(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        slow = await new_incident(c, "critical", "resolved")
        await new_incident(c, "low", "resolved")
        await new_incident(c, "medium", None)  # open, within its targets: not judged yet
        now = utcnow()
        # The critical one was opened ten hours before it was acknowledged and resolved.
        await db_update(
            api,
            update(Incident)
            .where(Incident.id == slow)
            .values(created_at=now - timedelta(hours=10)),
        )
        a = await assess(c, "soc2", now - timedelta(days=1), now + timedelta(minutes=5))
    timely = control(a, "incident-response-timely")
    assert timely["status"] == "partial"
    detail = timely["evidence"][0]["detail"]
    assert detail.startswith("3 opened, 2 judged, 1 outside their targets; MTTA ")
    assert f"late: INC-{slow} (critical: acknowledged after 10.0 h > 0.2 h, " in detail
    assert "resolved after 10.0 h > 4.0 h)" in detail
    assert requirement(a, "CC7.4")["status"] == "partial"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_audit_chain_evidences_logging(backend: str, tmp_path: Path) -> None:
    """On an app of its own: the trail is damaged on purpose, before and after the
    checkpoint a generated report leaves."""
    async with own_app(backend, tmp_path) as own:
        now = utcnow()
        period = {"period_start": z(now - timedelta(days=1)), "period_end": z(now)}
        table = AuditLog.__table__

        async def trail_evidence() -> tuple[str, str]:
            a = await assess(admin, "iso27001", now - timedelta(days=1), now)
            trail = control(a, "audit-trail-intact")
            assert requirement(a, "A.8.15")["status"] == trail["status"]
            return trail["status"], trail["evidence"][0]["detail"]

        async def forge(entry: int, action: str) -> None:
            async with own.app.state.ctx.db.engine.begin() as conn:
                await conn.execute(
                    sa.update(table).where(table.c.id == entry).values(action=action)
                )

        async with own.client(await own.headers_for("admin", ADMIN_PASSWORD)) as admin:
            r = await admin.post("/api/v1/users/teams", json={"name": "audited"})
            assert r.status_code == 201
            status, detail = await trail_evidence()
            assert status == "met" and detail.endswith(
                "every entry's hash and link hold, from the first"
            )

            # A generated report checkpoints the chain as it verified it.
            async with own.app.state.ctx.db.engine.connect() as conn:
                first, checkpointed = (
                    await conn.execute(sa.select(sa.func.min(table.c.id), sa.func.max(table.c.id)))
                ).one()
            r = await admin.post(f"{REPORTS}/generate", json={"framework": "iso27001", **period})
            assert r.status_code == 201, r.text
            r = await admin.post("/api/v1/users/teams", json={"name": "audited-later"})
            assert r.status_code == 201
            status, detail = await trail_evidence()
            # after it: the report's own entry and the team's
            assert status == "met" and "the 2 entries since the checkpoint of " in detail

            # Someone with the database owner's rights drops the protection and edits rows.
            drops = (
                ["DROP TRIGGER audit_logs_no_update ON audit_logs"]
                if backend == "postgres"
                else ["DROP TRIGGER audit_logs_no_update"]
            )
            async with own.app.state.ctx.db.engine.begin() as conn:
                for drop in drops:
                    await conn.execute(sa.text(drop))
            # Before the checkpoint: the assessment does not walk it again (and says so);
            # the full verification finds it.
            await forge(first, "forged")
            status, detail = await trail_evidence()
            assert status == "met" and "only a full verification" in detail
            full = (await admin.get("/api/v1/audit/verify")).json()
            assert (full["valid"], full["first_bad_id"]) == (False, first)
            # The checkpoint's own last entry, and one after it.
            async with own.app.state.ctx.db.engine.connect() as conn:
                action = await conn.scalar(
                    sa.select(table.c.action).where(table.c.id == checkpointed)
                )
            await forge(checkpointed, "forged")
            status, detail = await trail_evidence()
            assert status == "not_met" and detail.startswith(
                f"broken at entry {checkpointed}: this entry was removed or changed since the "
                "checkpoint of "
            )
            await forge(checkpointed, action)
            await forge(checkpointed + 1, "forged")
            status, detail = await trail_evidence()
    assert (status, detail) == (
        "not_met",
        f"broken at entry {checkpointed + 1}: this row was edited after it was written",
    )

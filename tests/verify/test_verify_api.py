"""Verification end to end, against real PostgreSQL on loopback and the real local
storage: each level catches the damage it exists for, restore tests leave no scratch
database behind, and every route refuses bad input with the right status and code."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from opscenter.core.clock import utcnow
from opscenter.core.events import Event
from opscenter.models import Backup, Job
from tests.conftest import Api, UserFactory
from tests.helpers import psql
from tests.verify.helpers import (
    add_counted_table,
    artifact_path,
    make_backup,
    make_server,
    replace_dump,
    run_result,
    scratch_databases,
    verify,
    wait_job,
)


def drain(queue: asyncio.Queue[Event]) -> list[Event]:
    events: list[Event] = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


async def backup_status(client: httpx.AsyncClient, backup_id: int) -> str:
    status: str = (await client.get(f"/api/v1/backups/{backup_id}")).json()["verification_status"]
    return status


async def test_checksum_catches_a_flipped_byte(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    assert await backup_status(admin, backup_id) == "unverified"

    good = await verify(api, admin, backup_id, test_type="checksum")
    assert good["status"] == "passed" and good["error_code"] is None, good
    assert good["backup_verification_status"] == "checksum_ok"
    assert good["duration_seconds"] is not None and "sha256" in good["detail"]

    path = await artifact_path(api, backup_id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    async with api.app.state.ctx.events.subscribe() as queue:
        bad = await verify(api, admin, backup_id, test_type="checksum")
        events = drain(queue)
    assert bad["status"] == "corrupt" and bad["error_code"] == "checksum_mismatch", bad
    assert await backup_status(admin, backup_id) == "corrupt"
    corrupt = [e for e in events if e.type == "backup.corrupt"]
    assert len(corrupt) == 1
    assert corrupt[0].data["severity"] == "critical"
    assert corrupt[0].data["backup_id"] == backup_id
    assert corrupt[0].data["server_id"] == server["id"]
    assert corrupt[0].data["database_name"] == source_db
    failed = [e for e in events if e.type == "verification.failed"]
    assert failed and failed[0].data["status"] == "corrupt"

    # a corrupt backup is refused for restore unless forced
    r = await admin.post(
        f"/api/v1/backups/{backup_id}/restore", json={"target_database": "oc_never_made"}
    )
    assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
    assert "corrupt" in r.json()["detail"]

    # the trail records both runs
    audit = (await admin.get("/api/v1/audit/logs", params={"resource_type": "backup"})).json()
    actions = {e["action"] for e in audit["items"] if str(e.get("resource_id")) == str(backup_id)}
    assert {"verification.create", "verification.passed", "verification.corrupt"} <= actions


async def test_deep_catches_a_truncated_dump_that_checksum_cannot(
    api: Api, admin: httpx.AsyncClient, source_db: str, tmp_path: Path
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    good = await verify(api, admin, backup_id, test_type="deep")
    assert good["status"] == "passed", good
    assert await backup_status(admin, backup_id) == "deep_ok"

    await replace_dump(api, backup_id, keep_bytes=4000, tmp=tmp_path)
    checksum = await verify(api, admin, backup_id, test_type="checksum")
    # A passing checksum never downgrades what a deeper check proved ...
    assert checksum["status"] == "passed" and checksum["backup_verification_status"] == "deep_ok"
    deep = await verify(api, admin, backup_id, test_type="deep")
    # ... but the deep check reads the dump and finds it cut short.
    assert deep["status"] == "corrupt" and deep["error_code"] == "verify_failed", deep
    assert await backup_status(admin, backup_id) == "corrupt"
    # A matching checksum does not clear a corrupt verdict.
    again = await verify(api, admin, backup_id, test_type="checksum")
    assert again["status"] == "passed" and again["backup_verification_status"] == "corrupt"


async def test_restore_test_compares_row_counts_records_rto_and_drops_the_scratch(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    before = scratch_databases()
    r = await admin.post("/api/v1/backup/recovery-tests", json={"backup_id": backup_id})
    assert r.status_code == 202, r.text
    await wait_job(api, r.json()["job_id"])
    result = await run_result(admin, backup_id, r.json()["id"])
    assert result["test_type"] == "restore"
    assert result["status"] == "passed", result
    assert result["backup_verification_status"] == "restore_verified"
    assert result["rto_seconds"] is not None and result["rto_seconds"] > 0
    assert result["target_server_id"] == server["id"]
    tables = {t["table"]: t for t in result["table_comparison"]}
    assert tables["public.customers"] == {
        "table": "public.customers",
        "expected": 300,
        "actual": 300,
        "status": "ok",
    }
    assert tables["public.orders"]["actual"] == 120 and tables["public.orders"]["status"] == "ok"
    assert result["scratch_database"].startswith("oc_verify_")
    assert result["scratch_database"] not in scratch_databases()
    assert scratch_databases() <= before

    listed = (
        await admin.get("/api/v1/backup/recovery-tests", params={"backup_id": backup_id})
    ).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == result["id"]
    status = (await admin.get(f"/api/v1/verify/{backup_id}/status")).json()
    assert status["status"] == "passed" and status["progress"] == 100.0

    # a later checksum does not downgrade restore_verified
    checksum = await verify(api, admin, backup_id, test_type="checksum")
    assert checksum["backup_verification_status"] == "restore_verified"
    recent = (await admin.get("/api/v1/verify", params={"backup_id": backup_id})).json()
    assert [i["test_type"] for i in recent["items"]] == ["checksum", "restore"]
    only_restore = (
        await admin.get("/api/v1/verify", params={"backup_id": backup_id, "test_type": "restore"})
    ).json()
    assert only_restore["total"] == 1


async def test_restore_test_catches_a_missing_table_and_still_drops_the_scratch(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    await add_counted_table(api, backup_id, "public.invoices", 42)
    before = scratch_databases()
    result = await verify(api, admin, backup_id, test_type="restore")
    assert result["status"] == "corrupt" and result["error_code"] == "table_missing", result
    assert "public.invoices" in result["error_message"]
    tables = {t["table"]: t for t in result["table_comparison"]}
    assert tables["public.invoices"] == {
        "table": "public.invoices",
        "expected": 42,
        "actual": None,
        "status": "missing",
    }
    assert tables["public.customers"]["status"] == "ok"
    assert await backup_status(admin, backup_id) == "corrupt"
    assert result["scratch_database"] not in scratch_databases()
    assert scratch_databases() <= before


async def test_unreachable_sandbox_fails_the_run_without_calling_the_backup_corrupt(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    secret = "sandbox-pw-must-not-leak"
    sandbox = await make_server(  # nothing listens there
        admin, port=1, credentials={"username": "postgres", "password": secret}
    )
    backup_id = await make_backup(api, admin, server["id"], source_db)
    result = await verify(
        api, admin, backup_id, test_type="restore", target_server_id=sandbox["id"]
    )
    assert result["status"] == "failed" and result["error_code"] == "unreachable", result
    assert result["target_server_id"] == sandbox["id"]
    assert await backup_status(admin, backup_id) == "unverified"
    status = await admin.get(f"/api/v1/verify/{backup_id}/status")
    audit = await admin.get("/api/v1/audit/logs", params={"resource_type": "backup"})
    for text in (str(result), status.text, audit.text):
        assert secret not in text


async def test_sample_scope_compares_a_subset(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    for n in range(12):
        psql(f"CREATE TABLE extra_{n} (id int); INSERT INTO extra_{n} VALUES ({n});", source_db)
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    result = await verify(api, admin, backup_id, test_type="restore", scope="sample")
    assert result["status"] == "passed", result
    assert len(result["table_comparison"]) == 10
    assert all(t["status"] == "ok" for t in result["table_comparison"])


async def test_bad_input_on_every_route(
    api: Api, admin: httpx.AsyncClient, source_db: str, make_user: UserFactory
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)

    async def expect(response: httpx.Response, status: int, code: str) -> None:
        assert response.status_code == status, response.text
        assert response.json()["code"] == code

    missing = 2_000_000_000
    await expect(await admin.post(f"/api/v1/verify/{missing}", json={}), 404, "NOT_FOUND")
    await expect(
        await admin.post(f"/api/v1/verify/{backup_id}", json={"test_type": "quick"}),
        422,
        "VALIDATION_ERROR",
    )
    await expect(
        await admin.post(f"/api/v1/verify/{backup_id}", json={"scope": "half"}),
        422,
        "VALIDATION_ERROR",
    )
    await expect(
        await admin.post(f"/api/v1/verify/{backup_id}", json={"test_type": "deep", "x": 1}),
        422,
        "VALIDATION_ERROR",
    )
    await expect(
        await admin.post(
            f"/api/v1/verify/{backup_id}",
            json={"test_type": "checksum", "target_server_id": server["id"]},
        ),
        422,
        "VALIDATION_ERROR",
    )
    await expect(
        await admin.post(
            f"/api/v1/verify/{backup_id}",
            json={"test_type": "restore", "target_server_id": missing},
        ),
        404,
        "NOT_FOUND",
    )
    await expect(await admin.post("/api/v1/verify/0", json={}), 422, "VALIDATION_ERROR")
    await expect(
        await admin.post("/api/v1/backup/recovery-tests", json={"backup_id": missing}),
        404,
        "NOT_FOUND",
    )
    await expect(
        await admin.post("/api/v1/backup/recovery-tests", json={}), 422, "VALIDATION_ERROR"
    )
    # nothing was half-written by the refusals
    assert (await admin.get("/api/v1/verify", params={"backup_id": backup_id})).json()["total"] == 0
    await expect(await admin.get(f"/api/v1/verify/{backup_id}/status"), 404, "NOT_FOUND")
    await expect(await admin.get(f"/api/v1/verify/{backup_id}/result"), 404, "NOT_FOUND")
    await expect(await admin.post(f"/api/v1/verify/{backup_id}/cancel"), 404, "NOT_FOUND")
    await expect(await admin.get(f"/api/v1/verify/{missing}/result"), 404, "NOT_FOUND")
    await expect(
        await admin.get("/api/v1/verify", params={"test_type": "quick"}), 422, "VALIDATION_ERROR"
    )

    # a backup that is not completed: 409
    r = await admin.post(
        "/api/v1/backups", json={"server_id": server["id"], "database_name": "oc_no_such_db"}
    )
    await wait_job(api, r.json()["job_id"])
    await expect(await admin.post(f"/api/v1/verify/{r.json()['id']}", json={}), 409, "CONFLICT")

    # cancelling a finished run: 409; a run of another backup: 404
    done = await verify(api, admin, backup_id, test_type="checksum")
    await expect(
        await admin.post(f"/api/v1/verify/{backup_id}/cancel", params={"run_id": done["id"]}),
        409,
        "CONFLICT",
    )
    await expect(
        await admin.get(f"/api/v1/verify/{r.json()['id']}/result", params={"run_id": done["id"]}),
        404,
        "NOT_FOUND",
    )

    # a viewer reads but may not start or cancel
    viewer = await make_user("viewer")
    async with viewer.client(api) as client:
        await expect(await client.post(f"/api/v1/verify/{backup_id}", json={}), 403, "FORBIDDEN")
        await expect(
            await client.post("/api/v1/backup/recovery-tests", json={"backup_id": backup_id}),
            403,
            "FORBIDDEN",
        )
        await expect(await client.post(f"/api/v1/verify/{backup_id}/cancel"), 403, "FORBIDDEN")
        seen = await client.get(f"/api/v1/verify/{backup_id}/result")
        assert seen.status_code == 200 and seen.json()["id"] == done["id"]


async def test_cancel_a_queued_run(api: Api, admin: httpx.AsyncClient, source_db: str) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    runner = api.app.state.ctx.runner
    # Hold the backup's verification lock, so the run stays queued until cancelled.
    lock = runner._locks.setdefault(f"verify:backup:{backup_id}", asyncio.Lock())
    async with lock:
        r = await admin.post(f"/api/v1/verify/{backup_id}", json={"test_type": "deep"})
        assert r.status_code == 202
        cancelled = await admin.post(f"/api/v1/verify/{backup_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
    await wait_job(api, r.json()["job_id"])
    result = await run_result(admin, backup_id, r.json()["id"])
    assert result["status"] == "cancelled"
    assert await backup_status(admin, backup_id) == "unverified"
    again = await admin.post(f"/api/v1/verify/{backup_id}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "CONFLICT"


async def test_seed_000_cancel_by_the_runs_own_id(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    await verify(api, admin, backup_id, test_type="checksum")  # so the ids below differ
    runner = api.app.state.ctx.runner
    lock = runner._locks.setdefault(f"verify:backup:{backup_id}", asyncio.Lock())
    async with lock:
        r = await admin.post(f"/api/v1/verify/{backup_id}", json={"test_type": "deep"})
        assert r.status_code == 202
        run_id = r.json()["id"]
        assert run_id != backup_id
        cancelled = await admin.post(f"/api/v1/verify/{run_id}/cancel")  # seed 000's {id}
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["id"] == run_id and cancelled.json()["status"] == "cancelled"
    await wait_job(api, r.json()["job_id"])
    assert (await run_result(admin, backup_id, run_id))["status"] == "cancelled"


async def test_a_deleted_backup_takes_its_runs_along(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    await verify(api, admin, backup_id, test_type="checksum")
    assert (await admin.delete(f"/api/v1/backups/{backup_id}")).status_code == 204
    listed: dict[str, Any] = (
        await admin.get("/api/v1/verify", params={"backup_id": backup_id})
    ).json()
    assert listed["total"] == 0
    async with api.app.state.ctx.db.read_session() as session:
        assert await session.get(Backup, backup_id) is None


async def test_a_restore_test_cut_by_a_restart_has_its_scratch_dropped(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    ctx = api.app.state.ctx
    lock = ctx.runner._locks.setdefault(f"verify:backup:{backup_id}", asyncio.Lock())
    async with lock:  # keep the run from starting here; play a process that died mid-test
        r = await admin.post(f"/api/v1/verify/{backup_id}", json={"test_type": "restore"})
        assert r.status_code == 202, r.text
        run_id, job_id = r.json()["id"], r.json()["job_id"]
        scratch = (await admin.get(f"/api/v1/verify/{backup_id}/result")).json()["scratch_database"]
        psql(f'CREATE DATABASE "{scratch}"')
        async with ctx.db.write_session() as session:
            await session.execute(
                update(Job).where(Job.id == job_id).values(status="running", started_at=utcnow())
            )
            await session.commit()
        assert scratch in scratch_databases()
        await ctx.runner.reconcile()  # what start-up does
    result = await run_result(admin, backup_id, run_id)
    assert result["status"] == "interrupted" and result["error_code"] == "interrupted"
    assert scratch not in scratch_databases()
    assert await backup_status(admin, backup_id) == "unverified"


async def test_another_teams_verifications_do_not_exist(
    api: Api, admin: httpx.AsyncClient, source_db: str, make_user: UserFactory
) -> None:
    server = await make_server(admin)
    backup_id = await make_backup(api, admin, server["id"], source_db)
    done = await verify(api, admin, backup_id, test_type="checksum")
    team = await admin.post("/api/v1/users/teams", json={"name": f"other-{source_db}"})
    assert team.status_code == 201, team.text
    outsider = await make_user("operator", team_ids=[team.json()["id"]])
    async with outsider.client(api) as client:
        for method, path, body in (
            ("POST", f"/api/v1/verify/{backup_id}", {}),
            ("GET", f"/api/v1/verify/{backup_id}/status", None),
            ("GET", f"/api/v1/verify/{backup_id}/result", None),
            ("POST", f"/api/v1/verify/{backup_id}/cancel", None),
            ("POST", "/api/v1/backup/recovery-tests", {"backup_id": backup_id}),
        ):
            r = await client.request(method, path, json=body)
            assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", (path, r.text)
        listed = (await client.get("/api/v1/verify", params={"backup_id": backup_id})).json()
        assert listed["total"] == 0
        tests = (await client.get("/api/v1/backup/recovery-tests")).json()
        assert done["id"] not in {i["id"] for i in tests["items"]}


async def test_a_restore_test_says_when_it_could_not_test_owners(
    api: Api, admin: httpx.AsyncClient, source_db: str
) -> None:
    """The sandbox's user is no member of the dump's owner: a real restore by it fails
    ("must be member of role"), so the test restores as a real restore would, and when
    only a restore without owners passes, the result says what was not tested."""
    suffix = source_db.rsplit("_", 1)[-1]
    owner, tester = f"oc_owner_{suffix}", f"oc_tester_{suffix}"
    psql(f"CREATE ROLE {owner}; CREATE ROLE {tester} LOGIN CREATEDB")
    try:
        psql(f"ALTER TABLE orders OWNER TO {owner}", source_db)
        server = await make_server(admin)
        sandbox = await make_server(admin, credentials={"username": tester})
        backup_id = await make_backup(api, admin, server["id"], source_db)
        run = await verify(
            api, admin, backup_id, test_type="restore", target_server_id=sandbox["id"]
        )
        assert run["status"] == "passed", run
        assert "owners and grants not tested" in run["detail"]
        assert "must be member of role" in run["detail"]
        # where a real restore would work, nothing is left out
        plain = await verify(api, admin, backup_id, test_type="restore")
        assert plain["status"] == "passed" and "not tested" not in plain["detail"], plain
    finally:
        psql(f'DROP DATABASE IF EXISTS "{source_db}" WITH (FORCE)')
        psql(f"DROP ROLE IF EXISTS {owner}; DROP ROLE IF EXISTS {tester}")

"""The typed events of a backup and a restore, in order, with what a subscriber
(notifications, webhooks, the WebSocket) needs to act on them."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from opscenter.core.events import Event
from tests.backups.test_backups import run_job
from tests.conftest import Api


def drain(queue: asyncio.Queue[Event]) -> list[Event]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def test_backup_and_restore_events(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("alpha")
    server = await admin.post(
        "/api/v1/servers",
        json={"name": f"files-{uuid.uuid4().hex[:6]}", "type": "local", "paths": [str(files)]},
    )
    assert server.status_code == 201, server.text
    ctx = api.app.state.ctx
    async with ctx.events.subscribe() as queue:
        accepted = await admin.post(
            "/api/v1/backups", json={"server_id": server.json()["id"], "source_path": str(files)}
        )
        assert (await run_job(api, admin, accepted))["status"] == "succeeded"
        backup_id = accepted.json()["id"]
        restores = api.settings.data_dir / "restores"  # the restore root every install has
        target = restores / f"restored-{backup_id}"
        restored = await admin.post(
            f"/api/v1/backups/{backup_id}/restore", json={"target_database": str(target)}
        )
        assert (await run_job(api, admin, restored))["status"] == "succeeded"
        await asyncio.sleep(0.05)
        ok = [e for e in drain(queue) if e.type.split(".")[0] in ("backup", "restore")]

        # a restore that fails: the artifact was damaged after the backup
        backup = (await admin.get(f"/api/v1/backups/{backup_id}")).json()
        path = api.settings.data_dir / "backups" / backup["storage_path"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))
        failing = await admin.post(
            f"/api/v1/backups/{backup_id}/restore",
            json={"target_database": str(restores / f"again-{backup_id}")},
        )
        assert (await run_job(api, admin, failing))["status"] == "failed"
        await asyncio.sleep(0.05)
        bad = [e for e in drain(queue) if e.type.startswith("restore.")]

    types = [e.type for e in ok if e.type != "backup.progress"]
    assert types == ["backup.started", "backup.completed", "restore.started", "restore.completed"]
    started = ok[0]
    assert (
        started.data["backup_id"] == backup_id and started.data["server_id"] == server.json()["id"]
    )
    assert all(e.team_id == started.team_id for e in ok)
    assert (target / "a.txt").read_text() == "alpha"
    assert [e.type for e in bad] == ["restore.started", "restore.failed"]
    failed = bad[-1].data
    assert failed["error_code"] in {"checksum_mismatch", "decrypt_failed"}
    assert failed["severity"] == "error"
    assert failed["target_database"] == str(restores / f"again-{backup_id}")

"""This host's files: what a backup may read and a restore may write as the server's OS
user. Paths are absolute, judged where their symlinks lead, never the installation's keys
or metadata database; local and sqlite paths are an admin's to set; files restore inside
the allowed roots only; an imported artifact is restored by an admin only."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backups.test_backups import run_job
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error, role_user

SERVERS = "/api/v1/servers"


def name() -> str:
    return f"host-{uuid.uuid4().hex[:8]}"


async def server_count(admin: httpx.AsyncClient) -> int:
    total: int = (await admin.get(SERVERS, params={"limit": 1})).json()["total"]
    return total


async def local_server(admin: httpx.AsyncClient, *paths: Path) -> dict[str, Any]:
    r = await admin.post(
        SERVERS, json={"name": name(), "type": "local", "paths": [str(p) for p in paths]}
    )
    assert r.status_code == 201, r.text
    server: dict[str, Any] = r.json()
    return server


def metadata_db(api: Api) -> str:
    url = api.settings.effective_database_url
    return url.removeprefix("sqlite+aiosqlite:///") if url.startswith("sqlite") else ""


async def test_the_installations_keys_and_database_are_never_a_servers_paths(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    data = api.settings.data_dir.resolve()
    link = tmp_path / "innocent"
    link.symlink_to(data / "keys")
    refused: list[dict[str, Any]] = [
        {"type": "local", "paths": [str(data / "keys")]},
        {"type": "local", "paths": [str(data / "keys" / "jwt.key")]},
        {"type": "local", "paths": [str(data)]},  # it holds them
        {"type": "local", "paths": ["/"]},
        {"type": "local", "paths": [str(link)]},  # judged where it leads
        {"type": "local", "paths": [f"{tmp_path}/../{tmp_path.name}"]},
        {"type": "ssh", "host": "127.0.0.1", "paths": ["/srv/../etc"]},
    ]
    if metadata_db(api):
        refused.append({"type": "sqlite", "paths": [metadata_db(api)]})
    before = await server_count(admin)
    for body in refused:
        r = await admin.post(SERVERS, json={"name": name(), **body})
        assert_error(r, 422, "VALIDATION_ERROR")
    assert await server_count(admin) == before

    server = await local_server(admin, tmp_path)
    r = await admin.put(f"{SERVERS}/{server['id']}", json={"paths": [str(data / "keys")]})
    assert_error(r, 422, "VALIDATION_ERROR")
    assert (await admin.get(f"{SERVERS}/{server['id']}")).json()["paths"] == [str(tmp_path)]


async def test_local_and_sqlite_paths_are_an_admins_to_set(
    api: Api, admin: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    operator = await role_user(api, admin_headers, "operator")
    server = await local_server(admin, tmp_path)
    async with operator.client(api) as c:
        before = await server_count(admin)
        for body in [
            {"type": "local", "paths": ["/etc/shadow"]},
            {"type": "sqlite", "paths": [str(tmp_path / "app.db")]},
        ]:
            assert_error(await c.post(SERVERS, json={"name": name(), **body}), 403, "FORBIDDEN")
        unsaved = {"name": name(), "type": "local", "paths": ["/etc/shadow"]}
        assert_error(await c.post(f"{SERVERS}/test-connection", json=unsaved), 403, "FORBIDDEN")
        assert await server_count(admin) == before
        r = await c.put(f"{SERVERS}/{server['id']}", json={"paths": ["/etc"]})
        assert_error(r, 403, "FORBIDDEN")
        # A local host without paths (its database engine only) stays an operator's.
        r = await c.post(SERVERS, json={"name": name(), "type": "local", "db_engine": "mysql"})
        assert r.status_code == 201, r.text
        pathless = r.json()
        r = await c.post(
            "/api/v1/backups", json={"server_id": pathless["id"], "source_path": "/etc"}
        )
        assert_error(r, 422, "VALIDATION_ERROR")  # it may back up no files at all
        r = await c.put(f"{SERVERS}/{server['id']}", json={"description": "renamed"})
        assert r.status_code == 200, r.text
    assert (await admin.get(f"{SERVERS}/{server['id']}")).json()["paths"] == [str(tmp_path)]


async def test_a_symlink_turned_towards_the_keys_fails_the_backup(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("alpha")
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "files")
    server = await local_server(admin, link)
    link.unlink()
    link.symlink_to(api.settings.data_dir.resolve() / "keys")  # after the admin's check
    accepted = await admin.post(
        "/api/v1/backups", json={"server_id": server["id"], "source_path": str(link)}
    )
    job = await run_job(api, admin, accepted)
    assert job["status"] == "failed" and job["error_code"] == "invalid_config", job
    backup = (await admin.get(f"/api/v1/backups/{accepted.json()['id']}")).json()
    assert backup["status"] == "failed" and backup["storage_path"] is None


@pytest.fixture
async def files_backup(api: Api, admin: httpx.AsyncClient, tmp_path: Path) -> dict[str, Any]:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("alpha")
    server = await local_server(admin, files)
    accepted = await admin.post(
        "/api/v1/backups", json={"server_id": server["id"], "source_path": str(files)}
    )
    assert (await run_job(api, admin, accepted))["status"] == "succeeded"
    backup: dict[str, Any] = (await admin.get(f"/api/v1/backups/{accepted.json()['id']}")).json()
    return backup


async def test_files_restore_only_inside_the_restore_roots(
    api: Api, admin: httpx.AsyncClient, files_backup: dict[str, Any], tmp_path: Path
) -> None:
    restores = api.settings.data_dir.resolve() / "restores"
    escape = tmp_path / "escape"
    escape.mkdir()
    restores.mkdir(exist_ok=True)
    (restores / f"out-{files_backup['id']}").symlink_to(escape)
    url = f"/api/v1/backups/{files_backup['id']}/restore"
    for target in [
        f"/etc/oc-{uuid.uuid4().hex[:6]}",
        str(tmp_path / "elsewhere"),  # not a configured root
        f"{restores}/../{uuid.uuid4().hex[:6]}",
        "../../etc/oc",
        str(restores),  # the area itself: a restore makes a new directory in it
        f"{restores}/out-{files_backup['id']}/inner",  # a link out of the area
        str(api.settings.data_dir.resolve() / "keys" / "new"),
    ]:
        r = await admin.post(url, json={"target_database": target})
        assert_error(r, 422, "VALIDATION_ERROR")
        assert "OPSCENTER_RESTORE_ROOTS" in r.json()["detail"] or ".." in r.json()["detail"]
    assert list(escape.iterdir()) == []

    target = restores / f"new-{uuid.uuid4().hex[:6]}"
    r = await admin.post(url, json={"target_database": str(target)})
    assert (await run_job(api, admin, r))["status"] == "succeeded"
    assert (target / "a.txt").read_text() == "alpha"


async def test_configured_restore_roots(tmp_path: Path) -> None:
    from opscenter.core.hostfiles import HostFiles
    from tests.conftest import make_settings

    root = tmp_path / "srv-restores"
    files = HostFiles(make_settings(tmp_path / "data", OPSCENTER_RESTORE_ROOTS=f"{root}, /nowhere"))
    files.check_restore_target(str(root / "app"))
    files.check_restore_target(str(tmp_path / "data" / "restores" / "app"))
    assert root.resolve() in files.restore_roots


async def test_an_imported_artifact_is_restored_by_an_admin_only(
    api: Api,
    admin: httpx.AsyncClient,
    make_user: UserFactory,
    files_backup: dict[str, Any],
    tmp_path: Path,
) -> None:
    artifact = api.settings.data_dir / "backups" / files_backup["storage_path"]
    manifest = Path(f"{artifact}.manifest.json")
    elsewhere = tmp_path / "other-storage"
    elsewhere.mkdir()
    provider = await admin.post(
        "/api/v1/storage/providers",
        json={"name": name(), "type": "local", "config": {"path": str(elsewhere)}},
    )
    assert provider.status_code == 201, provider.text
    r = await admin.post(
        "/api/v1/backups/import",
        params={"storage_id": provider.json()["id"]},
        content=artifact.read_bytes(),
        headers={
            "X-Backup-Manifest": base64.b64encode(manifest.read_bytes()).decode(),
            "Content-Type": "application/octet-stream",
        },
    )
    assert r.status_code == 201, r.text
    imported = r.json()
    assert imported["imported"] is True and files_backup["imported"] is False
    restores = api.settings.data_dir.resolve() / "restores"
    operator = await make_user("operator")
    url = f"/api/v1/backups/{imported['id']}/restore"
    async with operator.client(api) as c:
        r = await c.post(url, json={"target_database": str(restores / uuid.uuid4().hex[:8])})
        assert_error(r, 403, "FORBIDDEN")
        # the installation's own backups stay an operator's to restore
        own = f"/api/v1/backups/{files_backup['id']}/restore"
        r = await c.post(own, json={"target_database": str(restores / uuid.uuid4().hex[:8])})
        assert (await run_job(api, admin, r))["status"] == "succeeded"
    target = restores / uuid.uuid4().hex[:8]
    r = await admin.post(url, json={"target_database": str(target)})
    assert (await run_job(api, admin, r))["status"] == "succeeded"
    assert (target / "a.txt").read_text() == "alpha"

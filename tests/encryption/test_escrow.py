"""Escrow recipients: a backup made while one is registered decrypts with that offline
identity and the standard tools alone; one made after its removal does not."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx

from tests.backups.test_backups import run_job
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error


def keygen(path: Path) -> str:
    """An offline identity made with age-keygen; returns its public key."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


def decrypt_and_list(artifact: Path, identity: Path) -> subprocess.CompletedProcess[bytes]:
    """age -d | zstd -d | tar -t: what an admin runs with the escrow key, no opscenter."""
    return subprocess.run(
        f"age -d -i {identity} {artifact} | zstd -dc | tar -tf -",
        shell=True,
        capture_output=True,
        check=False,
        executable="/bin/bash",
        env={"PATH": "/usr/bin:/bin", "SHELLOPTS": "pipefail"},
    )


async def backup_files(api: Api, admin: httpx.AsyncClient, server_id: int, path: Path) -> Path:
    accepted = await admin.post(
        "/api/v1/backups", json={"server_id": server_id, "source_path": str(path)}
    )
    job = await run_job(api, admin, accepted)
    assert job["status"] == "succeeded", job
    backup = (await admin.get(f"/api/v1/backups/{accepted.json()['id']}")).json()
    assert backup["is_encrypted"] is True
    return api.settings.data_dir / "backups" / backup["storage_path"]


async def test_escrow_key_decrypts_backups_made_while_registered(
    api: Api, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    escrow_key = tmp_path / "escrow.key"
    public = keygen(escrow_key)
    files = tmp_path / "files"
    files.mkdir()
    (files / "report.txt").write_text("quarterly numbers")
    server = await admin.post(
        "/api/v1/servers",
        json={"name": f"files-{uuid.uuid4().hex[:6]}", "type": "local", "paths": [str(files)]},
    )
    assert server.status_code == 201, server.text

    added = await admin.post(
        "/api/v1/encryption/recipients",
        json={"name": f"vault-{uuid.uuid4().hex[:6]}", "recipient": public},
    )
    assert added.status_code == 201, added.text
    escrow = added.json()
    assert escrow["kind"] == "escrow" and escrow["key_id"].startswith("age-x25519:")
    try:
        listed = (await admin.get("/api/v1/encryption/recipients")).json()["items"]
        assert listed[0]["kind"] == "installation"
        assert escrow["id"] in [r["id"] for r in listed]
        assert not any("SECRET" in r["recipient"] for r in listed)

        with_escrow = await backup_files(api, admin, server.json()["id"], files)
        listing = decrypt_and_list(with_escrow, escrow_key)
        assert listing.returncode == 0, listing.stderr
        assert any(name.endswith("report.txt") for name in listing.stdout.decode().split())
    finally:
        removed = await admin.delete(f"/api/v1/encryption/recipients/{escrow['id']}")
        assert removed.status_code == 204

    without = await backup_files(api, admin, server.json()["id"], files)
    refused = decrypt_and_list(without, escrow_key)
    assert refused.returncode != 0 and b"no identity matched" in refused.stderr
    # The older backup still decrypts with it: removal applies to new backups only.
    assert decrypt_and_list(with_escrow, escrow_key).returncode == 0


async def test_bad_escrow_requests(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, tmp_path: Path
) -> None:
    url = "/api/v1/encryption/recipients"
    identity = tmp_path / "k"
    public = keygen(identity)
    private = next(
        line for line in identity.read_text().splitlines() if line.startswith("AGE-SECRET")
    )
    name = f"v-{uuid.uuid4().hex[:6]}"

    err = assert_error(
        await admin.post(url, json={"name": name, "recipient": private}), 422, "VALIDATION_ERROR"
    )
    assert "public key" in err["detail"] and private not in err["detail"]
    assert_error(
        await admin.post(url, json={"name": name, "recipient": "age1notakey0000000000"}),
        422,
        "VALIDATION_ERROR",
    )
    assert_error(await admin.post(url, json={"name": name}), 422, "VALIDATION_ERROR")
    assert_error(
        await admin.post(url, json={"name": name, "recipient": public, "extra": 1}),
        422,
        "VALIDATION_ERROR",
    )
    installation = (await admin.get(url)).json()["items"][0]["recipient"]
    assert_error(
        await admin.post(url, json={"name": name, "recipient": installation}), 409, "CONFLICT"
    )

    created = await admin.post(url, json={"name": name, "recipient": public})
    assert created.status_code == 201
    try:
        assert_error(
            await admin.post(url, json={"name": name + "x", "recipient": public}), 409, "CONFLICT"
        )
        operator = await make_user("operator")
        async with operator.client(api) as c:
            assert_error(
                await c.post(url, json={"name": "op", "recipient": public}), 403, "FORBIDDEN"
            )
            assert_error(await c.delete(f"{url}/{created.json()['id']}"), 403, "FORBIDDEN")
            assert (await c.get(url)).status_code == 200  # public keys: readable
    finally:
        assert (await admin.delete(f"{url}/{created.json()['id']}")).status_code == 204
    assert_error(await admin.delete(f"{url}/{created.json()['id']}"), 404, "NOT_FOUND")
    names = [r["name"] for r in (await admin.get(url)).json()["items"]]
    assert name not in names

"""Evidence of an incident: files streamed to storage with their SHA-256, text items,
immutability (corrections supersede), the custody log, tampering refused on download,
size and type limits judged on the content, and file names that never become paths."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from opscenter.models import Evidence, StorageProvider
from tests.auth.test_auth import assert_unauthorized
from tests.conftest import ADMIN_PASSWORD, Api, UserFactory
from tests.core.helpers import assert_error, uid
from tests.incidents.test_incidents_api import INCIDENTS, seed_example


def png(size: int = 20_000) -> bytes:
    """A real PNG image of about `size` bytes (an uncompressed grey picture)."""
    width = 100
    height = max(1, size // (width + 1))
    raw = b"".join(b"\x00" + bytes([i % 256]) * width for i in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 0))
        + chunk(b"IEND", b"")
    )


async def new_incident(admin: httpx.AsyncClient) -> str:
    r = await admin.post(INCIDENTS, json=seed_example(uid("sq")))
    assert r.status_code == 201, r.text
    return f"{INCIDENTS}/{r.json()['id']}"


async def upload(
    client: httpx.AsyncClient,
    url: str,
    data: dict[str, Any],
    name: str = "screen.png",
    content: bytes | None = None,
) -> httpx.Response:
    files = {"file": (name, content, "application/octet-stream")} if content is not None else None
    return await client.post(f"{url}/evidence", data=data, files=files)


async def stored_path(api: Api, evidence_id: int) -> Path:
    async with api.app.state.ctx.db.read_session() as s:
        item = await s.get(Evidence, evidence_id)
        assert item is not None and item.storage_key and item.storage_id
        provider = await s.get(StorageProvider, item.storage_id)
        assert provider is not None
    return Path(provider.config["path"]) / provider.config.get("prefix", "") / item.storage_key


async def evidence_count(api: Api) -> int:
    async with api.app.state.ctx.db.read_session() as s:
        return int(await s.scalar(select(func.count(Evidence.id))) or 0)


async def test_file_and_text_evidence_with_hash_and_custody(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    url = await new_incident(admin)
    image = png()
    r = await upload(admin, url, {"title": "Grafana panel", "type": "screenshot"}, content=image)
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["sha256"] == hashlib.sha256(image).hexdigest()
    assert item["size_bytes"] == len(image) and item["media_type"] == "image/png"
    assert item["file_name"] == "screen.png" and item["uploaded_by"] == "admin"
    path = await stored_path(api, item["id"])
    assert path.read_bytes() == image and "screen" not in path.name

    # seed 004's field name `evidence_type`, text content
    r = await upload(
        admin, url, {"title": "psql output", "evidence_type": "log", "content": "ERROR: too many"}
    )
    assert r.status_code == 201, r.text
    text = r.json()
    assert text["type"] == "log" and text["content"] == "ERROR: too many"
    assert text["sha256"] == hashlib.sha256(b"ERROR: too many").hexdigest()
    assert text["download_url"] is None

    viewer = await make_user("viewer")
    async with viewer.client(api) as c:
        listed = (await c.get(f"{url}/evidence")).json()
        assert [i["id"] for i in listed["items"]] == [text["id"], item["id"]]
        r = await c.get(item["download_url"])
        assert r.status_code == 200 and r.content == image
        assert r.headers["x-checksum-sha256"] == item["sha256"]
        assert_error(
            await upload(c, url, {"title": "x", "type": "log", "content": "y"}), 403, "FORBIDDEN"
        )
    custody = (await admin.get(f"{url}/evidence/{item['id']}/custody")).json()["items"]
    log = [(e["username"], e["action"]) for e in custody]
    assert log == [
        ("admin", "uploaded"),
        (viewer.username, "viewed"),
        (viewer.username, "downloaded"),
    ]
    assert custody[0]["detail"] == f"sha256 {item['sha256']}" and custody[0]["at"].endswith("Z")

    # immutable: no route edits or deletes an item; a correction supersedes it
    assert (await admin.patch(f"{url}/evidence/{item['id']}", json={})).status_code == 405
    assert (await admin.delete(f"{url}/evidence/{item['id']}")).status_code == 405
    fix = {"title": "psql output, full", "type": "log", "content": "ERROR: too many clients"}
    r = await upload(admin, url, fix | {"supersedes_id": str(text["id"])})
    assert r.status_code == 201 and r.json()["supersedes_id"] == text["id"]
    again = await upload(admin, url, fix | {"supersedes_id": str(text["id"])})
    assert_error(again, 409, "CONFLICT")
    old = (await admin.get(f"{url}/evidence/{text['id']}")).json()
    assert old["superseded_by_id"] == r.json()["id"] and old["content"] == "ERROR: too many"
    timeline = (await admin.get(f"{url}/timeline")).json()["items"]
    assert [e["kind"] for e in timeline].count("evidence_added") == 3


async def test_a_file_altered_in_storage_is_refused(api: Api, admin: httpx.AsyncClient) -> None:
    url = await new_incident(admin)
    r = await upload(admin, url, {"title": "app log", "type": "log"}, "app.log", b"line 1\n" * 500)
    assert r.status_code == 201, r.text
    item = r.json()
    path = await stored_path(api, item["id"])
    path.write_bytes(b"line 2\n" * 500)  # same size, other bytes
    r = await admin.get(item["download_url"])
    body = assert_error(r, 409, "EVIDENCE_TAMPERED")
    assert item["sha256"] in body["detail"]
    custody = (await admin.get(f"{url}/evidence/{item['id']}/custody")).json()["items"]
    assert custody[-1]["action"] == "download_refused"
    path.unlink()  # lost altogether: refused too
    assert_error(await admin.get(item["download_url"]), 409, "EVIDENCE_TAMPERED")


async def test_size_and_type_limits(api: Api, admin: httpx.AsyncClient) -> None:
    url = await new_incident(admin)
    before = await evidence_count(api)
    settings = api.app.state.ctx.settings
    saved = settings.evidence_max_bytes
    settings.evidence_max_bytes = 16_384
    try:
        r = await upload(admin, url, {"title": "too big", "type": "log"}, "big.log", b"a" * 16_385)
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        ok = await upload(admin, url, {"title": "fits", "type": "log"}, "ok.log", b"a" * 16_384)
        assert ok.status_code == 201, ok.text
    finally:
        settings.evidence_max_bytes = saved
    # an executable named like a picture: judged on its content
    elf = b"\x7fELF\x02\x01\x01" + b"\x00" * 9000
    r = await upload(admin, url, {"title": "binary", "type": "screenshot"}, "shot.png", elf)
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    r = await upload(
        admin, url, {"title": "random", "type": "other"}, "x.txt", bytes(range(256)) * 40
    )
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    for bad in [
        {"title": "no", "type": "log", "content": "x"},  # title too short
        {"title": "Missing type", "content": "x"},
        {"title": "Bad type", "type": "video", "content": "x"},
        {"title": "Nothing given", "type": "log"},
        {"title": "Smuggled", "type": "log", "content": "x", "uploaded_by": "ceo"},
        {"title": "Other incident", "type": "log", "content": "x", "supersedes_id": "999999"},
    ]:
        assert_error(await upload(admin, url, bad), 422, "VALIDATION_ERROR")
    both = await upload(
        admin, url, {"title": "Both", "type": "log", "content": "x"}, "a.txt", b"hello"
    )
    assert_error(both, 422, "VALIDATION_ERROR")
    r = await admin.post(f"{url}/evidence", json={"title": "JSON", "type": "log", "content": "x"})
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await evidence_count(api) == before + 1  # only the one that fit
    # nothing of the refused files is left in storage
    ok_path = await stored_path(api, ok.json()["id"])
    assert [p.name for p in ok_path.parent.iterdir()] == [ok_path.name]


async def test_file_names_never_become_paths(api: Api, admin: httpx.AsyncClient) -> None:
    url = await new_incident(admin)
    r = await upload(
        admin, url, {"title": "traversal", "type": "log"}, "../../../etc/passwd", b"x\n"
    )
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["file_name"] == "passwd"
    path = await stored_path(api, item["id"])
    assert path.read_bytes() == b"x\n" and path.name != "passwd"
    r = await upload(admin, url, {"title": "windows", "type": "log"}, "..\\..\\boot.ini", b"y\n")
    assert r.json()["file_name"] == "boot.ini"
    r = await admin.get(item["download_url"])
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''passwd"
    # a browser-like client escapes line breaks: the name stays one harmless line
    r = await upload(admin, url, {"title": "crlf", "type": "log"}, "a\r\nX-Injected: 1", b"z\n")
    assert "\r" not in r.json()["file_name"] and "\n" not in r.json()["file_name"]
    for name in ["..", "dir/"]:
        r = await upload(admin, url, {"title": "bad name", "type": "log"}, name, b"z\n")
        assert_error(r, 422, "VALIDATION_ERROR")
    # raw control characters, as a hand-made request sends them
    for raw in [b"esc\x1b[31m.log", b"nul\x00.log", b"tab\t.log"]:
        boundary = "b0undary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nbad name\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\nlog\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'
            ).encode()
            + raw
            + f'"\r\n\r\nz\n\r\n--{boundary}--\r\n'.encode()
        )
        r = await admin.post(
            f"{url}/evidence",
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert_error(r, 422, "VALIDATION_ERROR")


async def test_evidence_roles_and_teams(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    url = await new_incident(admin)
    item = (await upload(admin, url, {"title": "a log", "type": "log"}, "a.log", b"a\n")).json()
    async with api.client() as anonymous:
        assert_unauthorized(
            await upload(anonymous, url, {"title": "x", "type": "log", "content": "y"})
        )
        assert_unauthorized(await anonymous.get(item["download_url"]))
        assert_unauthorized(await anonymous.get(f"{url}/evidence/{item['id']}/custody"))
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("team-")})).json()
    outsider = await make_user("operator", team_ids=[team["id"]])
    async with outsider.client(api) as c:
        for path in [
            f"{url}/evidence/{item['id']}",
            item["download_url"],
            f"{url}/evidence/{item['id']}/custody",
        ]:
            assert_error(await c.get(path), 404, "NOT_FOUND")
        r = await upload(c, url, {"title": "x", "type": "log", "content": "y"})
        assert_error(r, 404, "NOT_FOUND")
    custody = (await admin.get(f"{url}/evidence/{item['id']}/custody")).json()["items"]
    assert [e["action"] for e in custody] == ["uploaded"]  # the refused reads left nothing
    async with api.client() as browser:  # the incident's UI page, in a cookie session
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        assert (await browser.post("/api/v1/auth/login", json=login)).status_code == 200
        page = await browser.get(url.replace("/api/v1/infra", ""))
    assert page.status_code == 200 and "a log" in page.text
    custody = (await admin.get(f"{url}/evidence/{item['id']}/custody")).json()["items"]
    assert [e["action"] for e in custody] == ["uploaded", "viewed"]

"""Every route answers the same with or without a trailing slash, and never redirects:
seed clients write collection routes both ways (`POST /servers/`, `GET /integrations/`)."""

from __future__ import annotations

import re
import uuid

import httpx

from tests.conftest import Api

SAMPLE_ID = "999999"


async def test_every_route_answers_the_same_with_a_trailing_slash(api: Api) -> None:
    """Unauthenticated, so nothing is changed: each spelling gets the same refusal (or the
    same answer, for the public routes), not a 307, 404 or 405."""
    paths = api.app.openapi()["paths"]
    assert len(paths) > 50
    async with api.client() as c:
        for template, operations in paths.items():
            path = re.sub(r"\{[^}]+\}", SAMPLE_ID, template).rstrip("/")
            for method in operations:
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                kwargs = {"json": {}} if method in {"post", "put", "patch"} else {}
                bare = await c.request(method, path, **kwargs)
                slashed = await c.request(method, path + "/", **kwargs)
                where = f"{method.upper()} {template}"
                assert not slashed.is_redirect and not bare.is_redirect, where
                assert slashed.status_code == bare.status_code, where
                assert slashed.status_code not in {404, 405} or bare.status_code in {404, 405}


async def test_seed_001_post_servers_with_a_slash_creates_the_server(
    admin: httpx.AsyncClient,
) -> None:
    # Seed 001's example, plus the container a docker server needs and a unique name.
    body = {
        "name": f"Production DB Server {uuid.uuid4().hex[:6]}",
        "container": "postgres",
        "description": "Main production database",
        "type": "docker",
        "environment": "production",
        "host": "192.168.1.100",
        "port": 22,
        "credentials": {
            "username": "admin",
            "password": "secure-password",
            "ssh_key": "optional-ssh-private-key",
        },
        "tags": {"region": "us-east-1", "team": "platform"},
    }
    r = await admin.post("/api/v1/servers/", json=body)
    assert r.status_code == 201, r.text
    r = await admin.get("/api/v1/servers/", params={"limit": 1000})
    assert r.status_code == 200 and body["name"] in [s["name"] for s in r.json()["items"]]

"""The platform around every route: health, metrics, the one error format, input rules
(body size, JSON, control characters, unknown fields), request ids, CORS and the docs."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from opscenter import runtime
from opscenter.app import create_app
from opscenter.ops import service as ops_service
from tests.conftest import Api, CreatedUser, make_settings
from tests.core.helpers import assert_error, no_stack_trace, role_user, uid

TEAMS = "/api/v1/users/teams"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
async def viewer(api: Api, admin_headers: dict[str, str]) -> CreatedUser:
    return await role_user(api, admin_headers, "viewer")


def bare_client(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client for an app whose lifespan is not run; app errors come back as responses."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(address, 1))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def teams_named(admin: httpx.AsyncClient, token: str) -> list[str]:
    r = await admin.get(f"{TEAMS}/list", params={"limit": 1000})
    return [t["name"] for t in r.json()["items"] if token in t["name"]]


# -- /health -------------------------------------------------------------------------------
async def test_health_ok(api: Api) -> None:
    async with api.client() as c:
        r = await c.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["checks"] == {
        "database": True,
        "event_bus": True,
        "task_engine": True,
        "workers": True,
    }
    assert body["errors"] == {}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", body["timestamp"])


async def test_health_is_503_naming_an_unreachable_database(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, "postgresql://postgres@127.0.0.1:1/x"))
    try:
        async with bare_client(app) as c:
            for _ in range(2):  # and again, with whatever the pool kept
                r = await c.get("/health")
                assert r.status_code == 503, r.text
                body = r.json()
                assert body["status"] == "unhealthy" and body["checks"]["database"] is False
                assert body["errors"]["database"]  # the failing check, named
                assert "postgres@" not in r.text and no_stack_trace(r.text)
                assert body["timestamp"].endswith("Z")
    finally:
        await app.state.ctx.db.dispose()


@pytest.fixture
async def stalled_port() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_health_answers_when_the_database_stalls(
    tmp_path: Path, stalled_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops_service, "CHECK_TIMEOUT_SECONDS", 0.3)
    app = create_app(make_settings(tmp_path, f"postgresql://postgres@127.0.0.1:{stalled_port}/x"))
    try:
        async with bare_client(app) as c:
            r = await asyncio.wait_for(c.get("/health"), timeout=15)
        assert r.status_code == 503
        assert r.json()["errors"]["database"] == "TimeoutError"
    finally:
        await app.state.ctx.db.dispose()


# -- /metrics ------------------------------------------------------------------------------
async def test_metrics_are_prometheus_text_by_route_template(
    api: Api, admin: httpx.AsyncClient
) -> None:
    me = (await admin.get("/api/v1/auth/me")).json()
    assert (await admin.get(f"/api/v1/users/{me['id']}")).status_code == 200
    missing = uid("nowhere-")
    assert (await admin.get(f"/api/v1/{missing}")).status_code == 404
    async with api.client() as c:  # public, for the scraper
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert missing not in r.text and f"/users/{me['id']}" not in r.text  # no raw paths

    samples = [s for family in text_string_to_metric_families(r.text) for s in family.samples]

    def find(name: str, **labels: str) -> list[Any]:
        return [
            s
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    route = {"method": "GET", "route": "/users/{user_id}"}
    (counter,) = find("opscenter_http_requests_total", status="200", **route)
    assert counter.value >= 1
    assert find("opscenter_http_requests_total", route="unmatched", status="404")
    buckets = find("opscenter_http_request_duration_seconds_bucket", **route)
    assert {b.labels["le"] for b in buckets} >= {"0.005", "1.0", "+Inf"}
    (count,) = find("opscenter_http_request_duration_seconds_count", **route)
    (inf,) = [b for b in buckets if b.labels["le"] == "+Inf"]
    assert count.value == inf.value >= 1
    assert find("opscenter_http_request_duration_seconds_sum", **route)


# -- the error format ----------------------------------------------------------------------
async def test_error_format_for_client_errors(
    api: Api, admin: httpx.AsyncClient, viewer: CreatedUser
) -> None:
    async with api.client() as anonymous:
        r = await anonymous.get("/api/v1/users")
        assert_error(r, 401, "UNAUTHORIZED")
        assert r.headers["www-authenticate"] == "Bearer"
    async with viewer.client(api) as c:
        assert_error(await c.get("/api/v1/users"), 403, "FORBIDDEN")
    assert_error(await admin.get("/api/v1/users/987654321"), 404, "NOT_FOUND")
    assert_error(await admin.get("/api/v1/no/such/route"), 404, "NOT_FOUND")
    assert_error(await admin.get("/no-such-page"), 404, "NOT_FOUND")
    r = await admin.patch("/api/v1/users/roles/list", json={})
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["allow"]
    assert_error(await admin.post("/health"), 405, "METHOD_NOT_ALLOWED")
    body = assert_error(await admin.get("/api/v1/users/abc"), 422, "VALIDATION_ERROR")
    assert body["detail"][0]["loc"] == ["path", "user_id"]
    assert set(body["detail"][0]) == {"loc", "msg", "type"}


async def test_rate_limit_is_429_in_the_error_format(tmp_path: Path) -> None:
    app = create_app(
        make_settings(
            tmp_path,
            OPSCENTER_RATE_LIMIT_ENABLED=True,
            OPSCENTER_RATE_LIMIT="3/minute",
            OPSCENTER_RATE_LIMIT_WRITE="1/minute",
        )
    )
    try:
        async with bare_client(app) as c:
            for remaining in ("2", "1", "0"):
                r = await c.get("/api/v1/auth/me")
                assert_error(r, 401, "UNAUTHORIZED")
                assert r.headers["x-ratelimit-limit"] == "3"
                assert r.headers["x-ratelimit-remaining"] == remaining
            r = await c.get("/api/v1/auth/me")
            assert_error(r, 429, "RATE_LIMITED")
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["x-ratelimit-remaining"] == "0"
            assert HEX32.match(r.headers["x-request-id"])
            assert (await c.get("/health")).status_code == 200  # outside /api: never limited

        async with bare_client(app, "127.0.0.2") as c:  # the stricter write limit
            assert_error(await c.post(TEAMS, json={"name": "x"}), 401, "UNAUTHORIZED")
            assert_error(await c.post(TEAMS, json={"name": "x"}), 429, "RATE_LIMITED")
            assert (await c.get("/api/v1/auth/me")).status_code == 401  # reads still allowed
    finally:
        await app.state.ctx.db.dispose()


async def test_unhandled_error_is_a_bare_500(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))

    @app.get("/api/v1/test-boom")
    async def boom() -> None:
        raise RuntimeError("secret-internal-detail at /srv/opscenter/keys")

    try:
        async with bare_client(app) as c:
            r = await c.get("/api/v1/test-boom", headers={"X-Request-ID": "trace-me-500"})
        body = assert_error(r, 500, "INTERNAL_ERROR")
        assert "secret-internal-detail" not in r.text and "RuntimeError" not in r.text
        assert "/srv/" not in r.text and no_stack_trace(r.text)
        assert "X-Request-ID" in body["detail"]
        assert r.headers["x-request-id"] == "trace-me-500"  # the handle to find it in the log
    finally:
        await app.state.ctx.db.dispose()


# -- input rules ---------------------------------------------------------------------------
async def test_body_over_the_limit_is_413_by_content_length(
    api: Api, admin: httpx.AsyncClient
) -> None:
    token = uid("big-")
    limit = api.settings.max_body_bytes
    body = {"name": token, "description": "x" * limit}
    r = await admin.post(TEAMS, json=body)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert r.headers["x-request-id"]
    async with api.client() as anonymous:  # refused before anything else looks at it
        assert_error(await anonymous.post(TEAMS, json=body), 413, "PAYLOAD_TOO_LARGE")
        r = await anonymous.post(TEAMS, content=b"{}", headers={"content-length": "12x"})
        assert r.status_code in (400, 413)
    assert await teams_named(admin, token) == []


async def _chunks(
    prefix: bytes, size: int, suffix: bytes, chunk: int = 64 * 1024
) -> AsyncIterator[bytes]:
    yield prefix
    sent = 0
    while sent < size:
        piece = min(chunk, size - sent)
        yield b"x" * piece
        sent += piece
    yield suffix


async def test_chunked_body_under_the_limit_is_accepted(admin: httpx.AsyncClient) -> None:
    token = uid("chunk-")
    content = _chunks(f'{{"name": "{token}", "description": "'.encode(), 450, b'"}', 50)
    r = await admin.post(TEAMS, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    assert "content-length" not in r.request.headers
    assert r.json()["description"] == "x" * 450


async def test_chunked_body_over_the_limit_is_413(api: Api, admin: httpx.AsyncClient) -> None:
    token = uid("bigchunk-")
    size = api.settings.max_body_bytes + 1
    content = _chunks(f'{{"name": "{token}", "description": "'.encode(), size, b'"}')
    r = await admin.post(TEAMS, content=content, headers={"content-type": "application/json"})
    assert await teams_named(admin, token) == []
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")


async def test_json_input_rules(admin: httpx.AsyncClient) -> None:
    token = uid("json-")
    raw: list[tuple[bytes, str | None]] = [
        (b'{"name": ', "json_invalid"),
        (b'{"name": "' + token.encode() + b'",}', "json_invalid"),
        (b'{"name": "\xff\xfe"}', "json_invalid"),  # not UTF-8
        (b'{"name": "' + token.encode() + b'", "member_ids": [NaN]}', None),
        (b'{"name": "' + token.encode() + b'", "member_ids": [Infinity]}', None),
        (b'{"name": "' + token.encode() + b'", "member_ids": [-Infinity]}', None),
        (b'{"name": NaN}', None),
        (b"[]", None),
        (b"null", None),
        (b'"just a string"', None),
    ]
    for content, kind in raw:
        r = await admin.post(TEAMS, content=content, headers={"content-type": "application/json"})
        body = assert_error(r, 422, "VALIDATION_ERROR")
        assert isinstance(body["detail"], list)
        if kind:
            assert body["detail"][0]["type"] == kind
    bodies: list[dict[str, Any]] = [
        {"name": f"{token}\x00"},
        {"name": f"{token}\x1b[31m"},
        {"name": token, "description": "bell\x07"},
        {"name": token, "description": "del\x7f"},
        {"name": token, "unknown": 1},
        {"name": token, "id": 5},
    ]
    for json_body in bodies:
        body = assert_error(await admin.post(TEAMS, json=json_body), 422, "VALIDATION_ERROR")
        assert all("input" not in item for item in body["detail"])  # never echoed back
    extra = assert_error(
        await admin.post(TEAMS, json={"name": token, "x": 1}), 422, "VALIDATION_ERROR"
    )
    assert extra["detail"][0]["type"] == "extra_forbidden"
    assert await teams_named(admin, token) == []
    # Ordinary whitespace in free text is fine.
    r = await admin.post(TEAMS, json={"name": token, "description": "line one\nline\ttwo\r\n"})
    assert r.status_code == 201, r.text


async def test_request_id_is_echoed_or_generated(api: Api) -> None:
    async with api.client() as c:
        r = await c.get("/health", headers={"X-Request-ID": "Abc.123_x-y"})
        assert r.headers["x-request-id"] == "Abc.123_x-y"
        r = await c.get("/api/v1/users", headers={"X-Request-ID": "err-path-1"})
        assert r.status_code == 401 and r.headers["x-request-id"] == "err-path-1"
        generated = set()
        for bad in (None, "", "has space", "x" * 65, "semi;colon", "new\\line", "ünïcode"):
            headers = {} if bad is None else {"X-Request-ID": bad}
            r = await c.get("/health", headers={k: v.encode() for k, v in headers.items()})
            rid = r.headers["x-request-id"]
            assert HEX32.match(rid), (bad, rid)
            generated.add(rid)
        assert len(generated) == 7


async def test_cors_allows_only_the_configured_origins(tmp_path: Path) -> None:
    app = create_app(
        make_settings(tmp_path, ALLOWED_ORIGINS="https://ui.example.com, https://ops.example.com")
    )
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-csrf-token",
    }
    try:
        async with bare_client(app) as c:
            for origin in ("https://ui.example.com", "https://ops.example.com"):
                r = await c.options(TEAMS, headers={"Origin": origin, **preflight})
                assert r.status_code == 200, r.text
                assert r.headers["access-control-allow-origin"] == origin
                assert r.headers["access-control-allow-credentials"] == "true"
                assert "POST" in r.headers["access-control-allow-methods"]
                assert "x-csrf-token" in r.headers["access-control-allow-headers"].lower()
                r = await c.get("/openapi.json", headers={"Origin": origin})
                assert r.headers["access-control-allow-origin"] == origin
                assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
            for origin in ("https://evil.example.com", "https://ui.example.com.evil.net", "null"):
                r = await c.options(TEAMS, headers={"Origin": origin, **preflight})
                assert r.status_code >= 400
                assert "access-control-allow-origin" not in r.headers
                r = await c.get("/openapi.json", headers={"Origin": origin})
                assert "access-control-allow-origin" not in r.headers
    finally:
        await app.state.ctx.db.dispose()


# -- docs ----------------------------------------------------------------------------------
async def test_docs_are_served_and_every_operation_declares_its_response(api: Api) -> None:
    async with api.client() as c:
        docs = await c.get("/docs")
        redoc = await c.get("/redoc")
        spec_response = await c.get("/openapi.json")
    assert docs.status_code == 200 and "swagger-ui" in docs.text.lower()
    assert redoc.status_code == 200 and "redoc" in redoc.text.lower()
    assert spec_response.status_code == 200
    spec = spec_response.json()
    components = spec["components"]["schemas"]
    missing: list[str] = []
    operations = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            operations += 1
            ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
            if not ok:
                missing.append(f"{method.upper()} {path}: no success response")
            for code, response in ok.items():
                if code == "204":
                    continue
                content = response.get("content") or {}
                if not content or any(not media.get("schema") for media in content.values()):
                    missing.append(f"{method.upper()} {path} {code}: no schema")
    assert operations >= 20
    assert not missing, missing
    for ref in set(re.findall(r'"#/components/schemas/([^"]+)"', spec_response.text)):
        assert ref in components, ref


async def test_the_collector_runs_less_often_while_serving(tmp_path: Path) -> None:
    """While the app runs, the collector's first threshold is `YOUNG_OBJECTS` (the
    objects of requests in flight no longer set it off); the process's own is back after."""
    before = gc.get_threshold()
    app = create_app(make_settings(tmp_path))
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == (runtime.YOUNG_OBJECTS, *before[1:])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before

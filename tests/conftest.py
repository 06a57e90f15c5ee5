"""Shared fixtures: a running app per metadata backend (SQLite file and real PostgreSQL),
clients logged in with each built-in role, and helpers that create users."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from opscenter.app import create_app
from opscenter.config import Settings
from opscenter.core.outbound import OutboundPolicy

ADMIN_PASSWORD = "admin-password-for-tests"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qAt", "-c", sql],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new PostgreSQL database (its SQLAlchemy URL), dropped afterwards."""
    name = f"oc_test_{uuid.uuid4().hex[:10]}"
    _psql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    with fresh_pg_database() as url:
        yield url


def make_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "OPSCENTER_ENVIRONMENT": "test",
        "OPSCENTER_DATA_DIR": data_dir,
        "OPSCENTER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "OPSCENTER_ADMIN_EMAIL": "admin@example.com",
        "OPSCENTER_RATE_LIMIT_ENABLED": False,
        "OPSCENTER_LOG_LEVEL": "WARNING",
        "OPSCENTER_HEALTH_INTERVAL": 0,
        "OPSCENTER_AUDIT_CHECKPOINT_INTERVAL": 0,
        # Bursts in tests run on a loaded 2-core machine: they test behaviour, not overload
        # (tests/core/test_overload.py sets its own short wait).
        "OPSCENTER_DB_POOL_TIMEOUT": 30,
        "OPSCENTER_RESOURCES_INTERVAL": 0,
        "OPSCENTER_SCHEDULER_INTERVAL": 0,
        "OPSCENTER_BACKUP_RETRY_SECONDS": 0.05,
        "DATABASE_URL": database_url,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Api:
    """A running app and ways to talk to it."""

    app: FastAPI
    backend: str
    settings: Settings

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000))
        return httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers or {}
        )

    async def login(self, username: str, password: str) -> dict[str, Any]:
        async with self.client() as c:
            r = await c.post(
                "/api/v1/auth/login", json={"username": username, "password": password}
            )
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def headers_for(self, username: str, password: str) -> dict[str, str]:
        data = await self.login(username, password)
        return {"Authorization": f"Bearer {data['access_token']}"}


class StartedApps:
    """One started app per backend, for the whole session."""

    def __init__(self, tmp: pytest.TempPathFactory, stack: contextlib.AsyncExitStack) -> None:
        self._tmp = tmp
        self._stack = stack
        self._apps: dict[str, Api] = {}

    async def get(self, backend: str, name: str = "data", **overrides: Any) -> Api:
        """The app `name` on `backend`, started with `overrides` the first time it is asked."""
        key = f"{name}-{backend}"
        if key not in self._apps:
            # Its own data dir *and* metadata database, as a real installation has them.
            data_dir = self._tmp.mktemp(key)
            url = self._stack.enter_context(fresh_pg_database()) if backend == "postgres" else None
            settings = make_settings(data_dir, url, **overrides)
            app = create_app(settings)
            await self._stack.enter_async_context(app.router.lifespan_context(app))
            self._apps[key] = Api(app, backend, settings)
        return self._apps[key]


@pytest.fixture(scope="session")
async def started_apps(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StartedApps]:
    async with contextlib.AsyncExitStack() as stack:
        yield StartedApps(tmp_path_factory, stack)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def api(request: pytest.FixtureRequest, started_apps: StartedApps) -> Api:
    # pytest tears a parametrized session fixture down whenever the order of the tests
    # switches between its parameters, which under xdist's per-file distribution is at
    # every file: the apps live in `started_apps`, so a switch costs nothing.
    return await started_apps.get(request.param)


@pytest.fixture(scope="session")
async def admin_headers(api: Api) -> dict[str, str]:
    return await api.headers_for("admin", ADMIN_PASSWORD)


@pytest.fixture
async def admin(api: Api, admin_headers: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client(admin_headers) as client:
        yield client


@pytest.fixture
def allow_loopback(api: Api) -> Iterator[None]:
    """What an admin does with OPSCENTER_OUTBOUND_ALLOWLIST=127.0.0.1 (127.0.0.2 stays out)."""
    ctx = api.app.state.ctx
    saved = ctx.outbound
    ctx.outbound = OutboundPolicy(["127.0.0.1"])
    yield
    ctx.outbound = saved


@dataclass
class CreatedUser:
    id: int
    username: str
    password: str
    headers: dict[str, str]

    def client(self, api: Api) -> httpx.AsyncClient:
        return api.client(self.headers)


UserFactory = Callable[..., Awaitable[CreatedUser]]


@pytest.fixture
def make_user(api: Api, admin_headers: dict[str, str]) -> UserFactory:
    """Create a user through the API (as admin) and log them in."""

    async def factory(role: str = "viewer", **fields: Any) -> CreatedUser:
        username = fields.pop("username", f"u{uuid.uuid4().hex[:10]}")
        password = fields.pop("password", f"pw-{uuid.uuid4().hex}")
        body = {
            "username": username,
            "email": f"{username}@example.com",
            "password": password,
            "role": role,
            **fields,
        }
        async with api.client(admin_headers) as c:
            r = await c.post("/api/v1/users", json=body)
        assert r.status_code == 201, r.text
        headers = await api.headers_for(username, password)
        return CreatedUser(r.json()["id"], username, password, headers)

    return factory


@contextlib.asynccontextmanager
async def admin_client(
    settings: Settings, address: tuple[str, int] = ("127.0.0.1", 123)
) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh app of its own (started and stopped around the block) and a client logged
    in as admin from ``address``; ``client.app`` is the app, for its job runner."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=address)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            client.app = app  # type: ignore[attr-defined]
            yield client

"""Helpers shared by the API, CLI, migration and core tests: fresh databases of either
backend, an app of one's own (for tests that break things on purpose), error checks."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_PASSWORD, Api, CreatedUser, _psql, make_settings

BACKENDS = ("sqlite", "postgres")
PG_HOST = "postgres@127.0.0.1:5432"


def uid(prefix: str = "t") -> str:
    """A short unique name; the shared apps outlive a test, so names must never repeat."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@contextmanager
def fresh_database(backend: str, data_dir: Path) -> Iterator[str]:
    """An async SQLAlchemy URL of an empty database of `backend`, dropped afterwards."""
    if backend == "sqlite":
        data_dir.mkdir(parents=True, exist_ok=True)
        yield f"sqlite+aiosqlite:///{data_dir.resolve() / 'opscenter.db'}"
        return
    name = f"oc_own_{uuid.uuid4().hex[:12]}"
    _psql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{PG_HOST}/{name}"
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def own_app(backend: str, data_dir: Path, **overrides: Any) -> AsyncIterator[Api]:
    """A started app on a database of its own, so it may be damaged without harming others."""
    with fresh_database(backend, data_dir) as url:
        settings = make_settings(data_dir, url, **overrides)
        from opscenter.app import create_app

        app = create_app(settings)
        async with app.router.lifespan_context(app):
            yield Api(app, backend, settings)


async def admin_client(api: Api) -> httpx.AsyncClient:
    return api.client(await api.headers_for("admin", ADMIN_PASSWORD))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error format: exactly {detail, code, timestamp}, timestamp UTC with Z."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "code", "timestamp"}, body
    assert body["code"] == code, body
    assert body["detail"], body
    assert body["timestamp"].endswith("Z")
    datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    return body


def no_stack_trace(text: str) -> bool:
    return "Traceback" not in text and 'File "' not in text


# Users are expensive here (an argon2id hash to create, another to log in), so the plain
# viewer and operator that permission tests act as are made once per app and reused.
_role_users: dict[tuple[int, str], CreatedUser] = {}
_logged_in_at: dict[tuple[int, str], float] = {}
#: A reused user logs in again after this long: the app's access tokens last 15 minutes,
#: and a suite on a loaded machine runs longer than that (a late test got a 401).
RELOGIN_SECONDS = 600


async def role_user(api: Api, admin_headers: dict[str, str], role: str) -> CreatedUser:
    """A logged-in user of `role` on `api`, shared by the tests that only read as it."""
    key = (id(api.app), role)
    if key in _role_users and time.monotonic() - _logged_in_at[key] > RELOGIN_SECONDS:
        user = _role_users[key]
        headers = await api.headers_for(user.username, user.password)
        _role_users[key] = CreatedUser(user.id, user.username, user.password, headers)
        _logged_in_at[key] = time.monotonic()
    if key not in _role_users:
        username, password = uid(f"{role[:3]}-"), f"pw-{uuid.uuid4().hex}"
        async with api.client(admin_headers) as c:
            r = await c.post(
                "/api/v1/users",
                json={
                    "username": username,
                    "email": f"{username}@example.com",
                    "password": password,
                    "role": role,
                },
            )
        assert r.status_code == 201, r.text
        headers = await api.headers_for(username, password)
        _role_users[key] = CreatedUser(r.json()["id"], username, password, headers)
        _logged_in_at[key] = time.monotonic()
    return _role_users[key]

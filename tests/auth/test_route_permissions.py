"""Every route names a permission from the catalogue (`auth/permissions.py`), through
`require(...)` (API) or `can_see(...)` (pages); the few that do not are listed here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from starlette.routing import WebSocketRoute

from opscenter.app import create_app
from opscenter.auth.deps import authenticate, require
from opscenter.auth.permissions import PERMISSIONS, checked_by
from tests.conftest import make_settings

#: Open to anyone; each authenticates its own way or has nothing to protect.
PUBLIC = {
    "GET /openapi.json",
    "GET /docs",
    "GET /docs/oauth2-redirect",
    "GET /redoc",
    "GET /health",
    "GET /metrics",
    "GET /login",
    "POST /api/v1/auth/login",
    "POST /api/v1/auth/refresh",
    "GET /api/v1/backups/{backup_id}/file",  # the signed query string is the authorization
    "WS /ws",  # authenticates in the handler (token, cookie or a first auth message)
    "MOUNT /static",  # the page assets
    # Single sign-on: the login's own legs, its buttons on the login page, its refusal page.
    "GET /sso/{slug}/login",
    "GET /sso/{slug}/callback",
    "GET /sso/options",
    "GET /sso/refused",
}
#: Any signed-in user: about their own session.
SIGNED_IN = {"POST /api/v1/auth/logout", "GET /api/v1/auth/me", "POST /api/v1/sso/logout"}


def calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from calls(sub)


def routes(tmp_path: Path) -> dict[str, list[Callable[..., Any]]]:
    """'METHOD /path' -> every dependency the route runs (HEAD goes with GET)."""
    app = create_app(make_settings(tmp_path))
    found = {}
    for route in iter_route_contexts(app.routes):
        websocket = isinstance(route.original_route, WebSocketRoute)
        methods = sorted(set(route.methods or {"WS" if websocket else "MOUNT"}) - {"HEAD"})
        dependant = getattr(route, "dependant", None)
        for method in methods:
            found[f"{method} {route.path}"] = list(calls(dependant)) if dependant else []
    return found


def test_every_route_names_a_permission_from_the_catalogue(tmp_path: Path) -> None:
    found = routes(tmp_path)
    assert len(found) > 100
    unguarded, unknown = [], []
    for route, dependencies in sorted(found.items()):
        permissions = [p for p in map(checked_by, dependencies) if p is not None]
        unknown += [f"{route}: {p}" for p in permissions if p not in PERMISSIONS]
        if route in PUBLIC:
            assert not permissions and authenticate not in dependencies, route
        elif route in SIGNED_IN:
            assert authenticate in dependencies, route
        elif not permissions:
            unguarded.append(route)
    assert not unguarded, f"routes that name no permission: {unguarded}"
    assert not unknown, f"permissions missing from the catalogue: {unknown}"
    assert not (PUBLIC | SIGNED_IN) - found.keys(), "an allow-listed route is gone: drop it"


def test_the_walk_sees_what_require_checks() -> None:
    """A misspelt permission would not hide from it."""
    assert checked_by(require("read:backups")) == "read:backups"
    assert checked_by(require("read:bakups")) not in PERMISSIONS

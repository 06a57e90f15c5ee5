"""Route lookup: `FilteredRouter` finds what FastAPI's own walk finds, and no dependency
makes a request hand over to a worker thread."""

from __future__ import annotations

import inspect
import re
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from opscenter.app import create_app
from opscenter.core.routing import FilteredRouter
from tests.conftest import make_settings


def _small_app(filtered: bool) -> FastAPI:
    backups = APIRouter(prefix="/backups")
    servers = APIRouter(prefix="/servers")
    root = APIRouter()

    @backups.get("")
    async def list_backups() -> str:
        return "backups"

    @backups.get("/{backup_id}")
    async def one_backup(backup_id: int) -> str:
        return f"backup {backup_id}"

    @servers.post("/{server_id}/test")
    async def test_server(server_id: int) -> str:
        return f"test {server_id}"

    @root.get("/{anything}/summary")
    async def summary(anything: str) -> str:
        return f"summary {anything}"

    app = FastAPI()
    api = APIRouter(prefix="/api/v1")
    for router in (backups, servers, root):
        api.include_router(FilteredRouter(router) if filtered else router)
    app.include_router(api)
    return app


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/backups"),
        ("GET", "/api/v1/backups/7"),
        ("GET", "/api/v1/backups/x"),  # matched, then refused by validation: 422
        ("POST", "/api/v1/servers/3/test"),
        ("GET", "/api/v1/servers/3/test"),  # the path exists with another method: 405
        ("GET", "/api/v1/servers/summary"),  # a router without a literal head
        ("GET", "/api/v1/nothing"),
        ("GET", "/api/v2/backups"),
    ],
)
async def test_filtered_router_answers_as_fastapi_does(method: str, path: str) -> None:
    answers = []
    for filtered in (False, True):
        transport = httpx.ASGITransport(app=_small_app(filtered))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.request(method, path)
            answers.append((r.status_code, r.text))
    assert answers[0] == answers[1]


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(make_settings(tmp_path_factory.mktemp("routing")))


async def test_every_api_route_is_found(product: FastAPI) -> None:
    """Each GET route of the product, with its parameters filled in, is found (401 before
    anything else), never the router's own 404."""
    app = product
    transport = httpx.ASGITransport(app=app)
    checked = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for route in iter_route_contexts(app.routes):
            if "GET" not in (route.methods or ()) or not route.path.startswith("/api/"):
                continue
            r = await client.get(re.sub(r"\{[^}]+\}", "1", route.path))
            assert r.status_code != 404 or r.json()["detail"] != "Not Found", route.path
            checked += 1
    assert checked > 100


def _calls(dependant: Dependant) -> list[Any]:
    found = [dependant.call] if dependant.call is not None else []
    for child in dependant.dependencies:
        found += _calls(child)
    return found


def _is_async(call: Any) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    # A security scheme is an instance whose `__call__` is a coroutine function.
    return not inspect.isfunction(call) and inspect.iscoroutinefunction(type(call).__call__)


def test_no_dependency_runs_in_a_worker_thread(product: FastAPI) -> None:
    """FastAPI runs a plain `def` dependency in a worker thread: a hand-over per request
    that cost the backup list a fifth of its time. Dependencies are `async def`."""
    app = product
    sync = sorted(
        {
            f"{call.__module__}.{getattr(call, '__qualname__', call)}"
            for route in iter_route_contexts(app.routes)
            if isinstance(getattr(route, "dependant", None), Dependant)
            for call in _calls(route.dependant)[1:]  # [0] is the endpoint itself
            if not _is_async(call)
        }
    )
    assert sync == []

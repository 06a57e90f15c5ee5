"""Route lookup and parameter reading: `FilteredRouter` finds what FastAPI's own walk
finds, a settled router still finds every route, parameters are read as FastAPI reads them,
and no dependency makes a request hand over to a worker thread."""

from __future__ import annotations

import inspect
import re
from typing import Annotated, Any

import fastapi.dependencies.utils as fastapi_params
import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from opscenter.app import create_app
from opscenter.core import routing
from opscenter.core.routing import FilteredRouter, SettledRouter
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

    @root.get("/tags")
    async def tags(
        tag: Annotated[list[str], Query()],
        one: str | None = None,
        ids: Annotated[list[int] | None, Query()] = None,
    ) -> dict[str, Any]:
        return {"tag": tag, "one": one, "ids": ids}

    app = FastAPI()
    api = SettledRouter(prefix="/api/v1") if filtered else APIRouter(prefix="/api/v1")
    for router in (backups, servers, root):
        api.include_router(FilteredRouter(router) if filtered else router)
    if isinstance(api, SettledRouter):
        api.settle()
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
        ("GET", "/api/v1/tags?tag=a&tag=b&one=x&one=y&ids=3&ids=4"),  # lists take every value
        ("GET", "/api/v1/tags?tag=a"),
        ("GET", "/api/v1/tags?ids=x"),  # 422: tag missing, ids not integers
    ],
)
async def test_filtered_router_answers_as_fastapi_does(
    method: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The product's routing (filtered, settled, parameter shapes memoized) against
    FastAPI's own."""
    answers = []
    for filtered in (False, True):
        if filtered:
            routing.memoize_parameter_shapes()
        else:
            original = routing._annotation_is_sequence
            monkeypatch.setattr(fastapi_params, "field_annotation_is_sequence", original)
        transport = httpx.ASGITransport(app=_small_app(filtered))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.request(method, path)
            answers.append((r.status_code, r.text))
    assert answers[0] == answers[1]
    if path.endswith("ids=4"):
        assert answers[1][0] == 200
        assert r.json() == {"tag": ["a", "b"], "one": "y", "ids": [3, 4]}


@pytest.mark.parametrize(
    "annotation",
    [
        int,
        str,
        bytes,
        int | None,
        list[str],
        list[int] | None,
        tuple[int, ...],
        set[str],
        frozenset[int],
        Annotated[list[str], "meta"],
        dict[str, int],
        Any,
    ],
)
def test_memoized_parameter_shapes_agree_with_fastapi(annotation: Any) -> None:
    original = routing._annotation_is_sequence
    assert routing._parameter_is_sequence(annotation) == original(annotation)
    assert routing._parameter_is_sequence(annotation) == original(annotation)  # from the memo


def test_an_unhashable_annotation_is_asked_each_time() -> None:
    unhashable = Annotated[list[str], {"not": "hashable"}]
    assert routing._parameter_is_sequence(unhashable) is True


async def test_a_settled_router_stops_counting_its_routes() -> None:
    """What settling saves: FastAPI asks each router for a count of the routes below it at
    each request; a settled one answers from the count taken when it settled."""
    app = _small_app(True)
    api = next(r for r in app.router.routes if hasattr(r, "original_router")).original_router
    assert isinstance(api, SettledRouter)
    counted: list[APIRouter] = []
    unsettled = APIRouter._get_routes_version

    def counting(self: APIRouter, seen: set[int] | None = None) -> int:
        counted.append(self)
        return unsettled(self, seen)

    APIRouter._get_routes_version = counting  # type: ignore[method-assign]
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/api/v1/backups/7")).json() == "backup 7"
    finally:
        APIRouter._get_routes_version = unsettled  # type: ignore[method-assign]
    # Only the domain router that answered (a few routes) is still counted.
    assert counted and not any(isinstance(router, SettledRouter) for router in counted)


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

"""Route lookup and parameter reading, without the per-request work FastAPI repeats.

FastAPI tries the routes in order, each against its regular expression, through every
router included before the one that answers: with about 600 routes, finding
`/api/v1/backups` cost a request more than its database work. `FilteredRouter` holds one
domain's router and answers "no match" at once for a path that contains none of the
literal heads of its routes (`/backups/` of `/backups/{backup_id}`): a path can only match
a route whose literal head it contains, so the answer is the same, found sooner.

FastAPI also recounts, at each request, every route below each router it passes (to notice
routes added since) and works out again, for each query parameter, whether its annotation
is a list: `SettledRouter` and `memoize_parameter_shapes` keep those answers instead.
"""

from __future__ import annotations

import functools
from typing import Any

import fastapi.dependencies.utils as fastapi_params
from fastapi import APIRouter
from fastapi._compat import field_annotation_is_sequence
from starlette.routing import BaseRoute, Match
from starlette.types import Scope


class SettledRouter(APIRouter):
    """A router whose routes are complete once `settle()` is called (when the app is
    made): FastAPI's count of the routes below it, about 600 here and asked five times per
    request, is taken then and stands."""

    _settled: int | None = None

    def settle(self) -> None:
        self._settled = None
        self._settled = self._get_routes_version()

    def _get_routes_version(self, seen: set[int] | None = None) -> int:
        if self._settled is not None:
            return self._settled
        return super()._get_routes_version(seen)


def _head(route: BaseRoute) -> str:
    path: str = getattr(route, "path", "/")
    return path.split("{", 1)[0] or "/"


class FilteredRouter(SettledRouter):
    def __init__(self, inner: APIRouter) -> None:
        super().__init__()
        self.include_router(inner)
        heads = {_head(route) for route in inner.routes}
        # A head that is a prefix of another already admits every path the longer one does.
        self._heads = tuple(h for h in heads if not any(o != h and h.startswith(o) for o in heads))
        self.settle()

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path: str = scope["path"]
        for head in self._heads:
            if head in path:
                return super().matches(scope)
        return Match.NONE, {}


_annotation_is_sequence = field_annotation_is_sequence


@functools.lru_cache(maxsize=4096)
def _known_shape(annotation: Any) -> bool:
    return _annotation_is_sequence(annotation)


def _parameter_is_sequence(annotation: Any) -> bool:
    try:
        return _known_shape(annotation)
    except TypeError:  # an unhashable annotation: asked each time, as FastAPI does
        return _annotation_is_sequence(annotation)


def memoize_parameter_shapes() -> None:
    """FastAPI (0.165) decides per request, for each query, header and cookie parameter,
    whether its annotation is a sequence (`list[str]` takes every value given, `str` the
    first): about a thousand `isinstance`/`get_origin` calls per backup list request, 6 %
    of its CPU. The answer depends on the annotation alone, so it is kept per annotation."""
    # The name the request-time reader (`_get_multidict_value`) looks up.
    fastapi_params.field_annotation_is_sequence = _parameter_is_sequence  # type: ignore[attr-defined]

"""JSON answers of hot read routes, encoded by orjson from plain rows.

A route that returns a Pydantic model pays for it three times: building the model, FastAPI
validating it again against `response_model`, then serializing it (our `UtcDatetime`
calls back into Python per timestamp). For the lists that are read most (a page of 50
backups cost about 5 ms of the 13 ms of a request in Pydantic alone), the route shapes
each row as a dict of the item model's fields and returns this response; the route keeps
`response_model=` for the OpenAPI schema, and a test per route checks that its JSON equals
the model's own serialization of the same rows.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import JSON, ColumnElement, DateTime, Text, TypeDecorator, cast, type_coerce
from starlette.responses import Response

# Timestamps as our `UtcDatetime` writes them: ISO 8601 in UTC with `Z`; SQLite's naive
# values are the UTC they were stored as (`core.clock.as_utc`).
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


def as_stored(column: Any) -> Any:
    """`column`, read for this response without a Python call per value: a timestamp as
    the driver answers it, not through its TypeDecorator (`UtcDateTime`). asyncpg answers
    UTC-aware values; SQLite naive ones, which `_OPTIONS` writes as the UTC they are."""
    kind = column.type
    if isinstance(kind, TypeDecorator) and isinstance(kind.impl_instance, DateTime):
        return type_coerce(column, kind.impl_instance).label(column.key)
    return column


def json_as_text(column: Any) -> ColumnElement[Any]:
    """A JSON column selected as the text the database holds, for `embedded`: neither
    decoded into Python objects nor encoded back. Only for columns whose values are lists
    and mappings of strings and integers: stored text is then valid JSON on both backends
    (PostgreSQL checks it; SQLite keeps what the standard library wrote, which has no NaN
    without a float)."""
    assert isinstance(column.type, JSON), column
    return cast(column, Text).label(column.key)


def embedded(text: str | None) -> orjson.Fragment | None:
    """A value of a `json_as_text` column, written into the answer as it is."""
    return None if text is None else orjson.Fragment(text)

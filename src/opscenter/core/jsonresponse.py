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
from starlette.responses import Response

# Timestamps as our `UtcDatetime` writes them: ISO 8601 in UTC with `Z`; SQLite's naive
# values are the UTC they were stored as (`core.clock.as_utc`).
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)

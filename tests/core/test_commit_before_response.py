"""A client that got its 201 can read what it created: the request's transaction commits
before the first byte of the answer leaves, never after (and a failed commit can still
answer an error instead of a success that was never kept)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select

from opscenter.models import Team
from tests.conftest import Api


async def test_the_row_is_committed_when_the_answer_starts(
    api: Api, admin_headers: dict[str, str]
) -> None:
    name = f"commit-order-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"name": name}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in admin_headers.items()]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/users/teams",
        "raw_path": b"/api/v1/users/teams",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    seen_at_start: list[bool] = []
    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
            # What another connection (the client's next request) sees at this moment.
            async with api.app.state.ctx.db.read_session() as session:
                found = await session.scalar(select(Team.id).where(Team.name == name))
            seen_at_start.append(found is not None)

    await api.app(scope, receive, send)
    assert status == [201]
    assert seen_at_start == [True]

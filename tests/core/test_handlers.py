"""Error rendering (core/handlers.py) for errors no API route raises on purpose: database
integrity errors (a lost race is a 409, anything else stays a bare 500) and bodies that
are not UTF-8."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from opscenter.core.handlers import install_error_handlers
from tests.core.helpers import assert_error, no_stack_trace


def _integrity_error(statement: str) -> IntegrityError:
    """A real IntegrityError from SQLite, as the driver raised it."""
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
        conn.exec_driver_sql("INSERT INTO t (name) VALUES ('taken')")
        try:
            conn.exec_driver_sql(statement)
        except IntegrityError as exc:
            return exc
    raise AssertionError("no integrity error")


class Body(BaseModel):
    name: str


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    duplicate = _integrity_error("INSERT INTO t (name) VALUES ('taken')")
    not_null = _integrity_error("INSERT INTO t (name) VALUES (NULL)")

    @app.post("/duplicate")
    async def raise_duplicate() -> None:
        raise duplicate

    @app.post("/not-null")
    async def raise_not_null() -> None:
        raise not_null

    @app.post("/echo")
    async def echo(body: Body) -> Body:
        return body

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_unique_violation_is_a_conflict(client: httpx.AsyncClient) -> None:
    r = await client.post("/duplicate")
    body = assert_error(r, 409, "CONFLICT")
    assert "UNIQUE" not in body["detail"] and "INSERT" not in r.text  # no SQL leaks


async def test_other_integrity_errors_stay_a_bare_500(client: httpx.AsyncClient) -> None:
    r = await client.post("/not-null")
    assert_error(r, 500, "INTERNAL_ERROR")
    assert "NOT NULL" not in r.text and "INSERT" not in r.text and no_stack_trace(r.text)


async def test_a_body_that_is_not_utf8_is_malformed_json(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    r = await client.post("/echo", content=b'{"name": "\xff\xfe"}', headers=headers)
    body = assert_error(r, 422, "VALIDATION_ERROR")
    assert body["detail"][0]["type"] == "json_invalid"
    r = await client.post("/echo", content='{"name": "é"}'.encode(), headers=headers)
    assert r.status_code == 200 and r.json() == {"name": "é"}

"""Input rules of the base schemas and the paging parameters (core/schemas.py,
core/pagination.py), below the HTTP layer."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, StringConstraints, ValidationError

from opscenter.backups.schemas import BackupCreate, RestoreRequest
from opscenter.core.pagination import MAX_LIMIT, page_params
from opscenter.core.schemas import Id, InputModel, Name, NoControlChars, Text, UtcDatetime


class Sample(InputModel):
    name: Name
    note: Text = ""
    ratio: float = 1.0
    labels: dict[str, Any] = {}
    short: Annotated[str, StringConstraints(max_length=5), NoControlChars] = ""


class Numbers(InputModel):
    ident: Id = 1
    idents: list[Id] = []
    count: int = 0
    ratio: float | None = None
    flag: bool = False
    anything: Any = None


class Stamped(BaseModel):
    at: UtcDatetime


@pytest.mark.parametrize(
    "values",
    [
        {"name": "ok", "extra": 1},
        {"name": "ok", "ratio": math.nan},
        {"name": "ok", "ratio": math.inf},
        {"name": "ok", "ratio": -math.inf},
        {"name": "nul\x00"},
        {"name": "ok", "note": "esc\x1b"},
        {"name": "ok", "labels": {"k": "bell\x07"}},
        {"name": "ok", "labels": {"k\x00": "v"}},
        {"name": "ok", "labels": {"deep": [{"x": "\x7f"}]}},
        {"name": "ok", "short": "sixsix"},
        {"name": "ok", "short": "\x01"},
        {"name": "   "},
        {"name": "x" * 201},
    ],
)
def test_input_model_rejects(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Sample(**values)


def test_input_model_accepts_ordinary_text() -> None:
    s = Sample(name="  trimmed  ", note="line\nnext\ttab\r\n", labels={"a": ["b", {"c": 1}]})
    assert s.name == "trimmed" and s.note.endswith("\r\n")


def test_utc_datetimes_leave_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert Stamped(at=datetime(2030, 1, 1, 2, 0, tzinfo=plus_two)).model_dump(mode="json") == {
        "at": "2030-01-01T00:00:00Z"
    }
    assert Stamped(at=datetime(2030, 1, 1, tzinfo=UTC)).model_dump_json() == (
        '{"at":"2030-01-01T00:00:00Z"}'
    )


@pytest.mark.parametrize(
    ("kwargs", "limit", "offset"),
    [
        ({}, 100, 0),
        ({"limit": 10}, 10, 0),
        ({"limit": 10, "offset": 30}, 10, 30),
        ({"page": 3, "page_size": 10}, 10, 20),
        ({"page": 2}, 100, 100),
        ({"page_size": 5}, 5, 0),
        ({"limit": 7, "page": 3}, 7, 14),  # limit is the page size when both are given
        ({"page": 3, "page_size": 10, "offset": 4}, 10, 4),  # an explicit offset wins
        ({"limit": MAX_LIMIT}, MAX_LIMIT, 0),
    ],
)
async def test_page_params(kwargs: dict[str, int], limit: int, offset: int) -> None:
    params = await page_params(**kwargs)  # type: ignore[arg-type]
    assert (params.limit, params.offset) == (limit, offset)


@pytest.mark.parametrize(
    "values",
    [{"ident": True}, {"idents": [1, True]}, {"count": False}, {"ratio": True}],
)
def test_booleans_are_not_numbers(values: dict[str, Any]) -> None:
    # JSON true is not 1: a client sending it has a bug the API must not paper over.
    with pytest.raises(ValidationError):
        Numbers(**values)


def test_booleans_where_booleans_belong() -> None:
    n = Numbers(flag=True, anything=True, ident=2, idents=[3], count=4, ratio=0.5)
    assert n.flag is True and n.anything is True and n.idents == [3]


@pytest.mark.parametrize("name", ["app\nDROP", "app\r", "tab\there", "\x1b[31m"])
def test_database_names_are_single_line_without_control_characters(name: str) -> None:
    # A newline would reach the tools and come back in error messages and logs.
    with pytest.raises(ValidationError):
        BackupCreate(server_id=1, database_name=name)
    with pytest.raises(ValidationError):
        RestoreRequest(target_database=name)

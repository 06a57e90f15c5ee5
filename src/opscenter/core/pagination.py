"""The one list shape: {"items", "total", "limit", "offset"}; page/page_size accepted too.

Totals are counted only so far (`COUNT_LIMIT` rows past the offset): a list longer than
that says `"total_estimated": true` and its `total` is a lower bound, so no request counts
a million rows. Lists of tables that grow without bound also page by `cursor`
(`next_cursor`): a deep page costs what the first one does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Generic, Self, TypeVar

from fastapi import Depends, Path, Query
from pydantic import BaseModel, BeforeValidator, Field
from sqlalchemy import BindParameter, Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from opscenter.core.clock import as_utc
from opscenter.core.db import DriverSelect
from opscenter.core.errors import InvalidInput
from opscenter.core.jsonresponse import JSONResponse
from opscenter.core.schemas import MAX_ID
from opscenter.core.templates import Bound

MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000
#: Rows counted past the offset for `total`; beyond them the total is a lower bound.
COUNT_LIMIT = 10_000
T = TypeVar("T")
ESTIMATED = (
    "true when the list goes on past what was counted: `total` is then a lower bound (there "
    "are more rows); page on with `next_cursor` where the list offers it, or `offset`"
)


class Total(int):
    """A row count that knows whether it is exact (`paginate` stops counting early)."""

    estimated: bool = False

    @classmethod
    def lower_bound(cls, value: int) -> Total:
        total = cls(value)
        total.estimated = True
        return total


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
    total_estimated: bool = Field(False, description=ESTIMATED)

    @classmethod
    def of(cls, items: Iterable[T], total: int, paging: PageParams) -> Self:
        """One page, with the total of the unpaged list (both from `paginate`)."""
        return cls(
            items=list(items),
            total=total,
            limit=paging.limit,
            offset=paging.offset,
            total_estimated=getattr(total, "estimated", False),
        )

    @classmethod
    def whole(cls, items: Iterable[T]) -> Page[T]:
        """A short list that is never paged, in the same shape."""
        rows = list(items)
        return cls(items=rows, total=len(rows), limit=len(rows), offset=0)


class KeysetPage(Page[T], Generic[T]):
    next_cursor: int | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page"
    )

    @classmethod
    def keyset(
        cls, items: Iterable[T], total: int, paging: PageParams, next_cursor: int | None
    ) -> Self:
        page = cls.of(items, total, paging)
        page.next_cursor = next_cursor
        return page


def keyset_json(
    items: list[dict[str, Any]], total: Total, paging: PageParams, next_cursor: int | None
) -> JSONResponse:
    """A `KeysetPage` of items already shaped as its item model's JSON (see `JSONResponse`)."""
    return JSONResponse(
        {
            "items": items,
            "total": total,
            "limit": paging.limit,
            "offset": paging.offset,
            "total_estimated": getattr(total, "estimated", False),
            "next_cursor": next_cursor,
        }
    )


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int
    cursor: int | None = None


_Limit = Annotated[int | None, Query(ge=1, le=MAX_LIMIT)]
_Offset = Annotated[int | None, Query(ge=0, le=MAX_OFFSET)]
_Page = Annotated[int | None, Query(ge=1, le=100_000)]
_PageSize = Annotated[int | None, Query(ge=1, le=MAX_LIMIT)]
_Cursor = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_ID,
        description="The `next_cursor` of the page before: the rows after it (the offset is "
        "then ignored). A cursor page costs what the first page costs.",
    ),
]


def _paging(
    limit: int | None, offset: int | None, page: int | None, size: int | None
) -> PageParams:
    size = limit or size or 100
    if offset is None:
        offset = (page - 1) * size if page else 0
    return PageParams(limit=size, offset=offset)


async def page_params(
    limit: _Limit = None, offset: _Offset = None, page: _Page = None, page_size: _PageSize = None
) -> PageParams:
    return _paging(limit, offset, page, page_size)


async def cursor_page_params(
    limit: _Limit = None,
    offset: _Offset = None,
    page: _Page = None,
    page_size: _PageSize = None,
    cursor: _Cursor = None,
) -> PageParams:
    # The same parameters as `page_params` and `cursor`, in one dependency rather than one
    # depending on the other: FastAPI's work per dependency is a per-request cost.
    paging = _paging(limit, offset, page, page_size)
    return PageParams(paging.limit, 0 if cursor else paging.offset, cursor)


@dataclass(frozen=True)
class DateWindow:
    start: datetime | None
    end: datetime | None


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _through_the_day(value: Any) -> Any:
    """A date-only `end_date` means up to the end of that day, not its first instant."""
    if isinstance(value, str) and _DATE_ONLY.fullmatch(value):
        return datetime.fromisoformat(value) + timedelta(days=1, microseconds=-1)
    return value


async def date_window(
    start_date: Annotated[
        datetime | None, Query(description="From this instant; without an offset it is UTC")
    ] = None,
    end_date: Annotated[
        datetime | None,
        BeforeValidator(_through_the_day),
        Query(description="Up to this instant (UTC without an offset); a date alone: that day"),
    ] = None,
) -> DateWindow:
    # Like every timestamp of the API, an instant without an offset is UTC.
    start = as_utc(start_date) if start_date else None
    end = as_utc(end_date) if end_date else None
    if start and end and start > end:
        raise InvalidInput("start_date must not be after end_date")
    return DateWindow(start, end)


Paging = Annotated[PageParams, Depends(page_params)]
Dates = Annotated[DateWindow, Depends(date_window)]
CursorPaging = Annotated[PageParams, Depends(cursor_page_params)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]


async def count(session: AsyncSession, stmt: Select[Any], offset: int = 0) -> Total:
    """The rows of `stmt`, counted up to `COUNT_LIMIT` past `offset`. Give a statement of
    one narrow column where it can be (`keyset_page` does): the database then counts off
    an index instead of reading every row."""
    stop = offset + COUNT_LIMIT
    return _total(await session.scalar(_counted(stmt, stop + 1)), stop)


def _counted(stmt: Select[Any], rows: int | BindParameter[int]) -> Select[Any]:
    """The rows of `stmt`, counted up to `rows` (one past the stop: see `_total`)."""
    return select(func.count()).select_from(stmt.order_by(None).limit(rows).subquery())


def _total(found: int | None, stop: int) -> Total:
    return Total.lower_bound(stop) if (found or 0) > stop else Total(found or 0)


async def paginate(
    session: AsyncSession, stmt: Select[Any], params: PageParams
) -> tuple[list[Any], Total]:
    """Rows of one page and the total of the unpaged statement (see `count`)."""
    total = await count(session, stmt, params.offset)
    rows = (await session.scalars(stmt.limit(params.limit).offset(params.offset))).all()
    return list(rows), total


async def keyset_page(
    session: AsyncSession,
    stmt: Select[Any] | Bound,
    params: PageParams,
    key: InstrumentedAttribute[int],
    *,
    columns: bool = False,
) -> tuple[list[Any], Total, int | None]:
    """Rows of one page of `stmt`, ordered by `key` descending, after `params.cursor`; the
    total of the whole list (cursor or not: see `count`), and the next page's cursor.
    `columns=True` answers the `Row`s of a statement of columns (the total rides as their
    last column) instead of objects.

    The total is a scalar subquery of the page's own statement, run once by the database:
    one statement per page instead of two (on SQLite each is several hand-overs to its
    thread). A page past the end has no row to carry it and counts on its own.

    A template's statement (`Bound`, columns only) is paged by a statement built once and
    run on the connection (on PostgreSQL, by the driver itself: `DriverSelect`), without the
    ORM's result machinery."""
    stop = params.offset + COUNT_LIMIT
    if isinstance(stmt, Bound):
        assert columns, "a template pages rows of columns"
        page = _keyset_template(stmt, key, params.cursor is not None)
        values = {
            **stmt.values,
            "_stop": stop + 1,
            "_limit": params.limit + 1,
            "_offset": params.offset,
        }
        if params.cursor is not None:
            values["_cursor"] = params.cursor
        found = list(await page.rows(session, values))
        whole, bound = stmt.statement, stmt.values
    else:
        counted = _counted(stmt.with_only_columns(key), stop + 1).scalar_subquery()
        paged = stmt if params.cursor is None else stmt.where(key < params.cursor)
        paged = paged.add_columns(counted).limit(params.limit + 1).offset(params.offset)
        found = list((await session.execute(paged)).all())
        whole, bound = stmt, {}
    if not found:
        counted_alone = _counted(whole.with_only_columns(key), stop + 1)
        return [], _total(await session.scalar(counted_alone, bound), stop), None
    total = _total(found[0][-1], stop)
    more = len(found) > params.limit
    found = found[: params.limit]
    rows = found if columns else [row[0] for row in found]
    if not more:
        next_cursor = None
    elif isinstance(stmt, Bound):  # its rows may be the driver's: by position
        next_cursor = found[-1][page.positions[key.key]]
    else:
        next_cursor = getattr(found[-1] if columns else rows[-1], key.key)
    return rows, total, next_cursor


def _keyset_template(bound: Bound, key: InstrumentedAttribute[int], after: bool) -> DriverSelect:
    """`keyset_page`'s statement for a template, built once: every value a bind parameter."""
    page = bound.derived.get((key.key, after))
    if page is None:
        stmt = bound.statement
        counted = _counted(stmt.with_only_columns(key), bindparam("_stop")).scalar_subquery()
        paged = stmt.where(key < bindparam("_cursor")) if after else stmt
        paged = paged.add_columns(counted).limit(bindparam("_limit")).offset(bindparam("_offset"))
        page = bound.derived[(key.key, after)] = DriverSelect(paged)
    return page

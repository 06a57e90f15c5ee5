"""The one list shape: {"items", "total", "limit", "offset"}; page/page_size accepted too."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Path, Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.schemas import MAX_ID

MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000
T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, items: Iterable[T], total: int, paging: PageParams) -> Page[T]:
        """One page, with the total of the unpaged list (both from `paginate`)."""
        return cls(items=list(items), total=total, limit=paging.limit, offset=paging.offset)

    @classmethod
    def whole(cls, items: Iterable[T]) -> Page[T]:
        """A short list that is never paged, in the same shape."""
        rows = list(items)
        return cls(items=rows, total=len(rows), limit=len(rows), offset=0)


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


def page_params(
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None,
    offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
    page: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    page_size: Annotated[int | None, Query(ge=1, le=MAX_LIMIT)] = None,
) -> PageParams:
    size = limit or page_size or 100
    if offset is None:
        offset = (page - 1) * size if page else 0
    return PageParams(limit=size, offset=offset)


Paging = Annotated[PageParams, Depends(page_params)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]


async def paginate(
    session: AsyncSession, stmt: Select[Any], params: PageParams
) -> tuple[list[Any], int]:
    """Rows of one page and the total count of the unpaged statement."""
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.scalars(stmt.limit(params.limit).offset(params.offset))).all()
    return list(rows), int(total or 0)

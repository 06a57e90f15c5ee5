"""What a domain's page handler needs, below the web layer that mounts and renders it.

A page handler (`<domain>/pages.py`) is an async function with FastAPI parameters
(session, query, path) plus `principal: Principal`; it returns a `View`: the template
(in `web/templates`) and its context. The web layer mounts it behind `can_see(permission)`,
renders the view in the shell and shows an `AppError` it raises as an error page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query
from pydantic import BeforeValidator, Field
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.pagination import PageParams, paginate
from opscenter.core.schemas import MAX_ID

#: Short lists show at most this many rows; the long ones (backups, audit) page (`Pager`).
LIST_LIMIT = 200
#: Rows per page of the long lists; the API pages through everything.
PAGE_SIZE = 50
PageNumber = Annotated[int, Query(ge=1, le=100_000, description="1 = the newest rows")]
# Filter forms send empty fields; an empty choice means "all", not a bad value.
FilterId = Annotated[
    Annotated[int, Field(ge=1, le=MAX_ID)] | None,
    BeforeValidator(lambda v: v or None),
    Query(),
]


@dataclass(frozen=True)
class View:
    """A page to render: its template and what the template reads."""

    template: str
    context: Mapping[str, object] = field(default_factory=dict)


PageHandler = Callable[..., Awaitable[View]]


@dataclass(frozen=True)
class Page:
    """A GET route of the UI, open to who holds `permission`; with None, open to anyone
    (pages of the login itself), and its handler takes no principal."""

    path: str
    handler: PageHandler
    permission: str | None


@dataclass(frozen=True)
class Widget:
    """A panel a domain adds to the dashboard, shown to who holds `permission`: its
    handler (`principal`, `session`) returns the `View` the dashboard includes, in the
    order of `rank`."""

    handler: PageHandler
    permission: str
    rank: int


@dataclass(frozen=True)
class NavLink:
    """A sidebar entry. Groups appear in the order of their first link's `rank`, links by
    `rank` within their group (ranks: Backups 0-99, Operations 100-199, ...)."""

    group: str
    label: str
    href: str
    permission: str
    rank: int
    badge_id: str | None = None  # a counter that app.js fills in (unread notifications)

    def is_current(self, path: str) -> bool:
        """This page or one under it (`/backups/7/restore` is in Backups)."""
        return path == self.href or (self.href != "/" and path.startswith(f"{self.href}/"))


@dataclass(frozen=True, slots=True)
class Pager:
    """One page of a long list, and the links to its neighbours that keep the filters."""

    page: int
    total: int
    filters: Mapping[str, object]
    size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first_row(self) -> int:
        return min(self.total, (self.page - 1) * self.size + 1)

    @property
    def last_row(self) -> int:
        return min(self.total, self.page * self.size)

    def query(self, page: int | None = None) -> str:
        """The filters (empty ones left out) and a page number, as a query string."""
        pairs = {k: v for k, v in self.filters.items() if v not in (None, "")}
        if (page or self.page) > 1:
            pairs["page"] = page or self.page
        return urlencode(pairs)


async def paged(
    session: AsyncSession, stmt: Select[Any], page: int, filters: Mapping[str, object]
) -> tuple[list[Any], Pager]:
    """The rows of ``page`` (1 = newest) of ``stmt``, and the pager that shows them."""
    params = PageParams(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    rows, total = await paginate(session, stmt, params)
    return rows, Pager(page, total, filters)

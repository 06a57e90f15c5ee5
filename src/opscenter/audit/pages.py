"""The audit log page."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from opscenter.audit import service as audit
from opscenter.core.context import SessionDep
from opscenter.core.pages import PageNumber, View, paged
from opscenter.core.principal import Principal


async def audit_page(
    principal: Principal,
    session: SessionDep,
    action: Annotated[str | None, Query(max_length=100)] = None,
    resource_type: Annotated[str | None, Query(max_length=100)] = None,
    page: PageNumber = 1,
) -> View:
    filters = audit.AuditFilters(
        action=action or None,
        resource_type=resource_type or None,
        **audit.reader_scope(principal),
    )
    shown = {"action": action or "", "resource_type": resource_type or ""}
    rows, pager = await paged(session, audit.filtered(filters), page, shown)
    return View("audit.html", {"entries": rows, "filters": shown, "pager": pager})

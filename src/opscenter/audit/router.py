"""Read views over the one audit trail: seed 001's /audit/logs, 002's /audit/events and
/audit/search, 004's /admin/audit-logs; plus export and chain verification."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from opscenter.audit import service
from opscenter.audit.schemas import AuditLogOut, AuditPage, ChainReportOut
from opscenter.auth.deps import require
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.jsonresponse import as_stored
from opscenter.core.pagination import Dates, PageParams, Paging, QueryId, keyset_json, keyset_page
from opscenter.core.principal import Principal
from opscenter.core.schemas import MAX_ID
from opscenter.models import AuditLog

router = APIRouter(tags=["Audit"])
Reader = Annotated[Principal, Depends(require("read:audit"))]


async def audit_filters(
    principal: Reader,
    dates: Dates,
    user_id: QueryId = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    resource_type: Annotated[str | None, Query(max_length=64)] = None,
    resource_id: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[Literal["success", "failure", "denied"] | None, Query()] = None,
    cursor: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Return rows older than this id")
    ] = None,
) -> service.AuditFilters:
    return service.AuditFilters(
        user_id=user_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        outcome=outcome,
        start=dates.start,
        end=dates.end,
        before_id=cursor,
        **service.reader_scope(principal),
    )


Filters = Annotated[service.AuditFilters, Depends(audit_filters)]


# `AuditLogOut`'s fields are the trail's columns: a page is read as rows and encoded once
# (core/jsonresponse.py), not built as objects and models.
_OUT_COLUMNS = [as_stored(getattr(AuditLog, name)) for name in AuditLogOut.model_fields]
_OUT_NAMES = tuple(AuditLogOut.model_fields)


async def _page(session: SessionDep, filters: service.AuditFilters, paging: Paging) -> Response:
    # The cursor pages through the list the other filters make (and counts that list).
    whole = service.filtered(replace(filters, before_id=None)).with_only_columns(*_OUT_COLUMNS)
    params = PageParams(paging.limit, 0 if filters.before_id else paging.offset, filters.before_id)
    rows, total, next_cursor = await keyset_page(session, whole, params, AuditLog.id, columns=True)
    # zip stops at the names: the total `keyset_page` adds after them is left out.
    items = [dict(zip(_OUT_NAMES, row, strict=False)) for row in rows]
    return keyset_json(items, total, params, next_cursor)


@router.get("/audit/logs", response_model=AuditPage)
async def list_logs(_: Reader, session: SessionDep, filters: Filters, paging: Paging) -> Response:
    return await _page(session, filters, paging)


@router.get("/audit/events", response_model=AuditPage)
async def list_events(_: Reader, session: SessionDep, filters: Filters, paging: Paging) -> Response:
    return await _page(session, filters, paging)


@router.get("/admin/audit-logs", response_model=AuditPage)
async def admin_audit_logs(
    _: Reader, session: SessionDep, filters: Filters, paging: Paging
) -> Response:
    return await _page(session, filters, paging)


@router.get("/audit/search", response_model=AuditPage)
async def search(
    _: Reader,
    session: SessionDep,
    filters: Filters,
    paging: Paging,
    q: Annotated[str, Query(min_length=1, max_length=200)],
) -> Response:
    filters = service.AuditFilters(**{**filters.__dict__, "query": q})
    return await _page(session, filters, paging)


@router.get("/audit/verify", response_model=ChainReportOut)
async def verify(_: Reader, session: SessionDep) -> ChainReportOut:
    return ChainReportOut.model_validate(await service.verify_chain(session))


CSV_COLUMNS = [
    "id",
    "created_at",
    "user_id",
    "username",
    "team_id",
    "api_key_id",
    "action",
    "resource_type",
    "resource_id",
    "outcome",
    "ip_address",
    "user_agent",
    "request_id",
    "details",
    "hash",
]


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The rows of the range, newest first (CSV with a header, or JSON)",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/AuditLogOut"},
                    }
                },
            },
        }
    },
)
async def export(
    _: Reader,
    ctx: Ctx,
    filters: Filters,
    format: Literal["csv", "json"] = "csv",
) -> StreamingResponse:
    """Streams the whole range, newest first, in constant memory."""

    async def rows() -> AsyncIterator[AuditLogOut]:
        async with ctx.db.read_session() as session:
            async for row in service.iter_rows(session, service.filtered(filters)):
                yield AuditLogOut.model_validate(row)

    async def as_csv() -> AsyncIterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        async for item in rows():
            data = item.model_dump(mode="json")
            data["details"] = json.dumps(data["details"], sort_keys=True)
            writer.writerow([data[c] for c in CSV_COLUMNS])
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
        yield buf.getvalue()

    async def as_json() -> AsyncIterator[str]:
        yield "["
        first = True
        async for item in rows():
            yield ("" if first else ",") + item.model_dump_json()
            first = False
        yield "]"

    stamp = "audit-export"
    if format == "csv":
        return StreamingResponse(
            as_csv(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{stamp}.csv"'},
        )
    return StreamingResponse(
        as_json(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{stamp}.json"'},
    )

"""Operations endpoints: /health (seed 004's shape) and /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.context import Ctx
from opscenter.core.metrics import REGISTRY

router = APIRouter(tags=["Operations"])
# A check that hangs (a stalled network, a database that accepts but never answers) is a
# failed check: a load balancer wants an answer within its own timeout, not in a minute.
CHECK_TIMEOUT_SECONDS = 5.0


class HealthOut(BaseModel):
    status: str
    checks: dict[str, bool]
    timestamp: str
    errors: dict[str, str] = {}


async def _check_database(ctx: Ctx) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS), ctx.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return type(exc).__name__
    return None


async def _check_rate_limit_store(ctx: Ctx) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            ok = await ctx.limiter.storage.check()
    except Exception as exc:
        return type(exc).__name__
    return None if ok else "unreachable"


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def health(ctx: Ctx) -> Any:
    """200 when every check passes; 503 naming the failing check otherwise."""
    errors: dict[str, str] = {}
    if (err := await _check_database(ctx)) is not None:
        errors["database"] = err
    checks = {"database": "database" not in errors}
    if ctx.settings.redis_url:
        if (err := await _check_rate_limit_store(ctx)) is not None:
            errors["redis"] = err
        checks["redis"] = "redis" not in errors
    body = HealthOut(
        status="healthy" if not errors else "unhealthy",
        checks=checks,
        timestamp=isoformat_z(utcnow()),
        errors=errors,
    )
    return JSONResponse(body.model_dump(), status_code=200 if not errors else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

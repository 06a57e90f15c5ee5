"""Operations endpoints: /health (seed 004's shape) and /metrics (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.context import Ctx
from opscenter.core.metrics import REGISTRY
from opscenter.ops import service

router = APIRouter(tags=["Operations"])


class JobsOut(BaseModel):
    engine: str  # "embedded" (in the server process) or "procrastinate" (worker processes)
    workers: int  # live processes taking jobs


class HealthOut(BaseModel):
    status: str  # healthy, degraded (200: serving, something is missing) or unhealthy (503)
    checks: dict[str, bool]
    timestamp: str
    errors: dict[str, str] = {}
    jobs: JobsOut | None = None  # None when the task engine did not answer


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def health(ctx: Ctx) -> Any:
    """200 when the process can serve (`degraded` names what is missing: the event bus,
    live workers); 503 when the database, the task engine or the rate-limit store is down.
    Every check runs at once, each bounded in time."""
    result = await service.health(ctx)
    engine = result.engine
    body = HealthOut(
        status=result.status,
        checks=result.checks,
        timestamp=isoformat_z(utcnow()),
        errors=result.errors,
        jobs=JobsOut(engine=engine.engine, workers=engine.workers) if engine else None,
    )
    return JSONResponse(body.model_dump(), status_code=503 if result.status == "unhealthy" else 200)


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
async def metrics(ctx: Ctx) -> Response:
    await service.refresh_job_queue(ctx)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

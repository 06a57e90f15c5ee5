"""FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from opscenter import __version__, web
from opscenter.audit.router import router as audit_router
from opscenter.auth.router import router as auth_router
from opscenter.backups.router import router as backups_router
from opscenter.bootstrap import announce
from opscenter.config import Settings, get_settings
from opscenter.core.handlers import install_error_handlers, use_error_body_for_validation
from opscenter.core.logging import configure_logging
from opscenter.core.middleware import (
    BodyLimitMiddleware,
    RateLimitMiddleware,
    RequestContextMiddleware,
    TrailingSlashMiddleware,
)
from opscenter.encryption.router import router as encryption_router
from opscenter.external_jobs.router import legacy_router as external_reports_legacy_router
from opscenter.external_jobs.router import router as external_jobs_router
from opscenter.external_jobs.watch import run_forever as watch_external_jobs
from opscenter.integrations.router import router as integrations_router
from opscenter.jobs.router import router as jobs_router
from opscenter.notifications.router import router as notifications_router
from opscenter.ops.router import router as ops_router
from opscenter.realtime.router import router as realtime_router
from opscenter.recovery.router import points_router as recovery_points_router
from opscenter.recovery.router import status_router as backup_status_router
from opscenter.retention.router import router as retention_router
from opscenter.runtime import build_context, running
from opscenter.schedules.router import policies_router as backup_policies_router
from opscenter.schedules.router import router as schedules_router
from opscenter.servers.health import run_forever as run_health_checks
from opscenter.servers.router import router as servers_router
from opscenter.storage.router import router as storage_router
from opscenter.tokens.router import router as tokens_router
from opscenter.users.router import router as users_router
from opscenter.verify.router import recovery_tests_router
from opscenter.verify.router import router as verify_router

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    ctx = build_context(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with running(ctx, scheduler=True) as first_start:
            announce(first_start)
            health = None
            if settings.health_interval_seconds > 0:
                health = asyncio.create_task(
                    run_health_checks(ctx, settings.health_interval_seconds)
                )
            watch = None
            if settings.external_jobs_check_seconds > 0:
                watch = asyncio.create_task(
                    watch_external_jobs(ctx, settings.external_jobs_check_seconds)
                )
            yield
            if health is not None:
                health.cancel()
            if watch is not None:
                watch.cancel()

    app = FastAPI(
        title="opscenter",
        version=__version__,
        description="Self-hosted ops control center built around trustworthy database backups.",
        lifespan=lifespan,
        redirect_slashes=False,  # TrailingSlashMiddleware serves both spellings instead
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    use_error_body_for_validation(app)

    api = APIRouter(prefix=API_PREFIX)
    for router in (
        auth_router,
        users_router,
        tokens_router,
        audit_router,
        servers_router,
        storage_router,
        backups_router,
        encryption_router,
        jobs_router,
        schedules_router,
        backup_policies_router,
        retention_router,
        backup_status_router,
        recovery_points_router,
        external_jobs_router,
        verify_router,
        recovery_tests_router,
        integrations_router,
        notifications_router,
    ):
        api.include_router(router)
    app.include_router(api)
    # Seed 000's legacy report path for backup scripts, outside the versioned API.
    app.include_router(external_reports_legacy_router)
    app.include_router(ops_router)
    app.include_router(realtime_router)
    # The browser UI last: its pages are exact paths, so it never shadows an API route.
    web.install(app)

    # Starlette runs the last added middleware first.
    app.add_middleware(
        RateLimitMiddleware,
        limiter=ctx.limiter,
        keyring=ctx.keyring,
        default_rule=settings.rate_limit_default,
        write_rule=settings.rate_limit_write,
    )
    # Artifact uploads stream to storage and are bounded by their manifest instead.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        exempt_prefixes=(f"{API_PREFIX}/backups/import",),
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "X-API-Key",
            "X-CSRF-Token",
            "X-Request-ID",
            "Idempotency-Key",
        ],
        expose_headers=[
            "X-Request-ID",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Retry-After",
        ],
    )
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(TrailingSlashMiddleware)
    return app

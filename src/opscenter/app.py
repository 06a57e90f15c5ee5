"""FastAPI application factory."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from opscenter import __version__, web
from opscenter.bootstrap import announce
from opscenter.config import Settings, get_settings
from opscenter.core.handlers import install_error_handlers, use_error_body_for_validation
from opscenter.core.logging import configure_logging
from opscenter.core.middleware import Gateway, RateLimits
from opscenter.core.routing import FilteredRouter, SettledRouter, memoize_parameter_shapes
from opscenter.domains import registry
from opscenter.runtime import build_context, running

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    ctx = build_context(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with running(ctx, scheduler=True) as first_start:
            announce(first_start)
            yield

    app = FastAPI(
        title="opscenter",
        version=__version__,
        description="Self-hosted ops control center built around trustworthy database backups.",
        lifespan=lifespan,
        redirect_slashes=False,  # the Gateway serves both spellings instead
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    use_error_body_for_validation(app)

    memoize_parameter_shapes()
    api = SettledRouter(prefix=API_PREFIX)
    for router in registry().api_routers:
        api.include_router(FilteredRouter(router))
    api.settle()
    app.include_router(api)
    for router in registry().root_routers:
        app.include_router(router)
    # The browser UI last: its pages are exact paths, so it never shadows an API route.
    web.install(app)

    # Starlette runs the last added middleware first: CORS (only when origins are allowed:
    # it wraps every response) before the gateway, so its answers (429, 413) carry CORS too.
    app.add_middleware(
        Gateway,
        limits=RateLimits(
            ctx.limiter, ctx.keyring, settings.rate_limit_default, settings.rate_limit_write
        ),
        max_body_bytes=settings.max_body_bytes,
        body_exempt=tuple(
            re.compile(f"{API_PREFIX}{path}/?") for path in registry().streamed_uploads
        ),
    )
    if settings.allowed_origins:
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
    return app

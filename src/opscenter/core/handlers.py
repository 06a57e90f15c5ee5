"""Every error, whatever raised it, leaves in the one format."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.errors import AppError, ErrorBody
from opscenter.core.logging import get_logger

log = get_logger("opscenter.errors")

_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


def error_response(
    status: int, code: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"detail": detail, "code": code, "timestamp": isoformat_z(utcnow())}
    return JSONResponse(body, status_code=status, headers=headers)


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's list without echoing the input back (it may hold a password) and
    reduced to JSON-safe values."""
    cleaned = []
    for err in errors:
        item = {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        cleaned.append(json.loads(json.dumps(item, default=str)))
    return cleaned


# Unique and foreign-key violations (PostgreSQL SQLSTATE, SQLite message): a concurrent
# request won the race a service's own check could not see; the caller gets the 409 the
# check would have given. Any other integrity error is a bug and stays a 500.
_CONFLICT_SQLSTATES = frozenset({"23505", "23503"})
_CONFLICT_SQLITE = ("UNIQUE constraint failed", "FOREIGN KEY constraint failed")


def _is_conflict(exc: IntegrityError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate) in _CONFLICT_SQLSTATES
    return str(exc.orig).startswith(_CONFLICT_SQLITE)


_NOT_UTF8 = [{"loc": ["body"], "msg": "Body is not valid UTF-8 JSON", "type": "json_invalid"}]


RETRY_AFTER_SECONDS = 1


def _busy() -> JSONResponse:
    return error_response(
        503,
        "SERVICE_UNAVAILABLE",
        "The server is busy: no database connection came free in time; try again shortly",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "VALIDATION_ERROR", _clean_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers a body that is not UTF-8 with a bare 400; it is malformed
            # JSON like any other, and malformed JSON is a 422.
            return error_response(422, "VALIDATION_ERROR", _NOT_UTF8)
        code = _STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").lower()
        return error_response(exc.status_code, code, detail, getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        if not _is_conflict(exc):
            raise exc  # a bug: on to the 500 handler
        return error_response(
            409, "CONFLICT", "This conflicts with existing data (it may have just been created)"
        )

    # Overload: no pooled connection came free in time, or SQLite's writer lock did not
    # within its busy timeout. The client may try again; it is not a fault of the request.
    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_: Request, exc: PoolTimeout) -> JSONResponse:
        return _busy()

    @app.exception_handler(OperationalError)
    async def _operational(_: Request, exc: OperationalError) -> JSONResponse:
        if "database is locked" not in str(exc.orig):
            raise exc  # on to the 500 handler
        return _busy()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        log.error(
            "unhandled error",
            path=request.url.path,
            error=type(exc).__name__,
            request_id=request_id,
        )
        # Sent by Starlette's outermost middleware, outside the one that adds the header.
        return error_response(
            500,
            "INTERNAL_ERROR",
            "Internal error; the request id in X-Request-ID locates it in the log",
            {"X-Request-ID": request_id} if request_id else None,
        )


def use_error_body_for_validation(app: FastAPI) -> None:
    """FastAPI documents 422 as its own `HTTPValidationError`; we answer with ErrorBody
    (detail, code, timestamp), so the schema says that."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "HTTPValidationError" in components:
            error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
            error_schema["title"] = "HTTPValidationError"
            components["HTTPValidationError"] = error_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

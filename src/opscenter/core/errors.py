"""Typed errors rendered in the one error format: {"detail", "code", "timestamp"}."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel


class ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]]
    code: str
    timestamp: str


class AppError(Exception):
    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "BAD_REQUEST"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(AppError):
    pass


class Unauthorized(AppError):
    status_code = 401
    code = "UNAUTHORIZED"

    def __init__(self, detail: str = "Authentication required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code = 403
    code = "FORBIDDEN"


class NotFound(AppError):
    status_code = 404
    code = "NOT_FOUND"

    def __init__(self, resource: str, ident: object | None = None) -> None:
        suffix = f" {ident}" if ident is not None else ""
        super().__init__(f"{resource}{suffix} not found")


class Conflict(AppError):
    status_code = 409
    code = "CONFLICT"


class InvalidInput(AppError):
    """A well-formed request that breaks a business rule the schema cannot express."""

    status_code = 422
    code = "VALIDATION_ERROR"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(AppError):
    status_code = 429
    code = "RATE_LIMITED"


def responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the errors a route can raise."""
    return {err.status_code: {"model": ErrorBody, "description": err.code} for err in errors}

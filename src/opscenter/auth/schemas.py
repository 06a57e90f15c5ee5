from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from opscenter.core.schemas import InputModel, OutputModel, UtcDatetime
from opscenter.users.schemas import UserOut


class LoginRequest(InputModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=254)] | None = None
    email: Annotated[str, StringConstraints(min_length=1, max_length=254)] | None = None
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]

    @model_validator(mode="after")
    def _one_identifier(self) -> LoginRequest:
        if not (self.username or self.email):
            raise ValueError("give username or email")
        return self

    @property
    def identifier(self) -> str:
        return (self.username or self.email or "").strip().lower()


class RefreshRequest(InputModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class LogoutRequest(InputModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None


class AccessToken(OutputModel):
    """A new access token of a live session (seed 004's Step 3 answers `token`, `expiresAt`)."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth token type, not a secret)
    expires_at: UtcDatetime
    token: str = Field(description="Seed 004's name of `access_token`")
    expiresAt: UtcDatetime = Field(description="Seed 004's name of `expires_at`")


class TokenPair(AccessToken):
    """A login, or a rotated refresh token: access and refresh tokens, the CSRF token of
    the cookie session, and the user."""

    refresh_token: str
    refresh_expires_at: UtcDatetime
    csrf_token: str
    user: UserOut

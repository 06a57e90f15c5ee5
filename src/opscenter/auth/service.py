"""Login, refresh-token rotation with reuse detection, logout."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.auth.deps import load_user
from opscenter.config import Settings
from opscenter.core.clock import as_utc, utcnow
from opscenter.core.db import release
from opscenter.core.security import Keyring, new_token, sha256_hex, verify_password
from opscenter.models import RefreshToken, User

REFRESH_PREFIX = "ocr_"


def _new_refresh_token(session_version: int) -> str:
    """`ocr_<session version>_<random>`. The stored digest covers the version, so it cannot
    be edited: a token issued before a password change, role change or disable (each bumps
    the user's session version) can no longer be exchanged, like the access tokens."""
    return new_token(f"{REFRESH_PREFIX}{session_version}_")


def _session_version_of(raw_token: str) -> int | None:
    version, sep, _ = raw_token.removeprefix(REFRESH_PREFIX).partition("_")
    return int(version) if sep and version.isdigit() else None


@dataclass(frozen=True)
class IssuedSession:
    user: User
    access_token: str
    access_expires_at: datetime
    session_token: str  # the browser cookie
    refresh_token: str
    refresh_expires_at: datetime
    csrf_token: str
    family_id: str


class LoginFailed(Exception):
    def __init__(self, reason: str, user: User | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user = user


class RefreshRejected(Exception):
    def __init__(self, reason: str, *, reused: bool = False, user_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reused = reused
        self.user_id = user_id


def _named(identifier: str) -> ColumnElement[bool]:
    return or_(func.lower(User.username) == identifier, func.lower(User.email) == identifier)


async def login_limit_key(session: AsyncSession, identifier: str) -> str:
    """The per-account login rate-limit bucket: one per account, whether it is named by
    username or by email (a name that matches no account has its own)."""
    user_id = await session.scalar(select(User.id).where(_named(identifier)).limit(1))
    return f"user:{user_id}" if user_id is not None else f"name:{identifier}"


async def authenticate_password(session: AsyncSession, identifier: str, password: str) -> User:
    """The password is always checked, against a dummy hash for unknown users, so the
    time taken does not reveal whether an account exists."""
    user = await session.scalar(select(User).where(_named(identifier)))
    # argon2 takes a few hundred ms of CPU: off the event loop, or every login stalls
    # every other request of this process; and outside the transaction, or every login
    # holds SQLite's one write lock (or the user's row) that long.
    await release(session)
    ok = await asyncio.to_thread(verify_password, user.password_hash if user else None, password)
    if user is not None:  # as it is now: it may have been disabled meanwhile
        user = await session.get(User, user.id, populate_existing=True)
    if user is None or not ok:
        raise LoginFailed("bad_credentials", user)
    if not user.is_active:
        raise LoginFailed("disabled", user)
    return user


async def start_session(
    session: AsyncSession, keyring: Keyring, settings: Settings, user: User
) -> IssuedSession:
    user.last_login = utcnow()
    family = str(uuid.uuid4())
    return await _issue(session, keyring, settings, user.id, family)


async def _issue(
    session: AsyncSession, keyring: Keyring, settings: Settings, user_id: int, family: str
) -> IssuedSession:
    user = await load_user(session, user_id)
    assert user is not None
    now = utcnow()
    refresh = _new_refresh_token(user.session_version)
    refresh_ttl = timedelta(hours=settings.jwt_expiration_hours)
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family,
            token_hash=sha256_hex(refresh),
            issued_at=now,
            expires_at=now + refresh_ttl,
        )
    )
    claims = {
        "sub": str(user.id),
        "sv": user.session_version,
        "sid": family,
        "role": user.role.name,
    }
    access, access_exp = keyring.issue_jwt(
        {**claims, "typ": "access"}, timedelta(minutes=settings.access_token_minutes)
    )
    cookie, _ = keyring.issue_jwt({**claims, "typ": "session"}, refresh_ttl)
    await session.flush()
    return IssuedSession(
        user=user,
        access_token=access,
        access_expires_at=access_exp,
        session_token=cookie,
        refresh_token=refresh,
        refresh_expires_at=now + refresh_ttl,
        csrf_token=keyring.sign(f"csrf:{family}"),
        family_id=family,
    )


async def rotate_refresh(
    session: AsyncSession, keyring: Keyring, settings: Settings, raw_token: str
) -> IssuedSession:
    """Exchange a refresh token for a new pair. Presenting one that was already used means
    it leaked: the whole family (that login session) is revoked."""
    token = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == sha256_hex(raw_token))
    )
    now = utcnow()
    if token is None:
        raise RefreshRejected("unknown")
    if token.revoked_at is not None:
        raise RefreshRejected("revoked", user_id=token.user_id)
    if token.used_at is not None:
        await revoke_family(session, token.family_id)
        raise RefreshRejected("reused", reused=True, user_id=token.user_id)
    if token.expires_at <= now:
        raise RefreshRejected("expired", user_id=token.user_id)
    user = await load_user(session, token.user_id)
    if user is None or not user.is_active:
        raise RefreshRejected("user_disabled", user_id=token.user_id)
    if _session_version_of(raw_token) != user.session_version:
        raise RefreshRejected("session_ended", user_id=token.user_id)
    # Claim the token atomically: of concurrent requests presenting it, exactly one wins
    # (PostgreSQL re-checks the condition after the winner commits); the others are reuse.
    claimed = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        await revoke_family(session, token.family_id)
        raise RefreshRejected("reused", reused=True, user_id=token.user_id)
    return await _issue(session, keyring, settings, user.id, token.family_id)


async def extend_session(
    session: AsyncSession, keyring: Keyring, settings: Settings, user: User, family: str
) -> tuple[str, datetime]:
    """A new access token for the caller's live login session (seed 004 refreshes with its
    access token): sliding, but never past the session's absolute lifetime, counted from
    the login."""
    started = await session.scalar(
        select(func.min(RefreshToken.issued_at)).where(RefreshToken.family_id == family)
    )
    if started is None:
        raise RefreshRejected("unknown", user_id=user.id)
    now = utcnow()
    ends = as_utc(started) + timedelta(hours=settings.jwt_expiration_hours)
    lifetime = min(timedelta(minutes=settings.access_token_minutes), ends - now)
    if lifetime <= timedelta(0):
        raise RefreshRejected("expired", user_id=user.id)
    return keyring.issue_jwt(
        {
            "sub": str(user.id),
            "sv": user.session_version,
            "sid": family,
            "role": user.role.name,
            "typ": "access",
        },
        lifetime,
    )


async def revoke_family(session: AsyncSession, family_id: str) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def family_of(session: AsyncSession, raw_token: str) -> str | None:
    return await session.scalar(
        select(RefreshToken.family_id).where(RefreshToken.token_hash == sha256_hex(raw_token))
    )

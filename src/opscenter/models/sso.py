"""Single sign-on: OpenID Connect providers, the identities they vouch for, and login
attempts (one row per authorization request: its state, nonce and PKCE verifier)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from opscenter.models.base import Base, IdMixin, TimestampMixin


class SsoProvider(IdMixin, TimestampMixin, Base):
    __tablename__ = "sso_providers"
    __table_args__ = {"sqlite_autoincrement": True}

    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(255))
    # Keyring.encrypt_secret(..., context="sso_providers.client_secret:<id>"); None: public client
    client_secret_enc: Mapped[str | None] = mapped_column(Text)
    scopes: Mapped[str] = mapped_column(String(500), default="openid email profile")
    enabled: Mapped[bool] = mapped_column(default=True)
    # Create an account on first login; otherwise only known or email-matched users get in.
    create_users: Mapped[bool] = mapped_column(default=True)
    match_verified_email: Mapped[bool] = mapped_column(default=True)
    groups_claim: Mapped[str] = mapped_column(String(100), default="groups")
    # [{"claim", "value", "role", "teams": [...]}], checked in order; see sso/mapping.py
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    default_role: Mapped[str | None] = mapped_column(String(64))


class SsoIdentity(IdMixin, TimestampMixin, Base):
    """A provider's subject bound to one local user."""

    __tablename__ = "sso_identities"
    __table_args__ = (UniqueConstraint("provider_id", "subject"), {"sqlite_autoincrement": True})

    provider_id: Mapped[int] = mapped_column(
        ForeignKey("sso_providers.id", ondelete="CASCADE"), index=True
    )
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str | None] = mapped_column(String(254))
    last_login_at: Mapped[datetime | None]


class SsoLogin(IdMixin, Base):
    """One authorization request. Its state works once (claimed by `used_at`), and what
    became of it is kept for the refusal page and for logout at the provider."""

    __tablename__ = "sso_logins"
    __table_args__ = {"sqlite_autoincrement": True}

    provider_id: Mapped[int] = mapped_column(
        ForeignKey("sso_providers.id", ondelete="CASCADE"), index=True
    )
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    nonce: Mapped[str] = mapped_column(String(128))
    verifier_enc: Mapped[str] = mapped_column(Text)
    redirect_uri: Mapped[str] = mapped_column(String(1000))
    next_path: Mapped[str] = mapped_column(String(1000), default="/")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))  # "success" | a refusal code
    message: Mapped[str | None] = mapped_column(String(1000))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    family_id: Mapped[str | None] = mapped_column(String(36), index=True)
    id_token_enc: Mapped[str | None] = mapped_column(Text)  # the id_token_hint of logout

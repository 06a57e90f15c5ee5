"""All ORM models, a module per domain, imported here so metadata is complete."""

from opscenter.models.audit import AuditLog
from opscenter.models.auth import ApiKey, RefreshToken, Role, Team, User, team_members
from opscenter.models.base import Base, IdMixin, TimestampMixin
from opscenter.models.servers import Server

__all__ = [
    "ApiKey",
    "AuditLog",
    "Base",
    "IdMixin",
    "RefreshToken",
    "Role",
    "Server",
    "Team",
    "TimestampMixin",
    "User",
    "team_members",
]

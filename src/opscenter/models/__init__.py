"""All ORM models, a module per domain, imported here so metadata is complete."""

from opscenter.models.audit import AuditLog
from opscenter.models.auth import ApiKey, RefreshToken, Role, Team, User, team_members
from opscenter.models.backups import Backup, Job
from opscenter.models.base import Base, IdMixin, TimestampMixin
from opscenter.models.schedules import RetentionPolicy, Schedule, ScheduleRun
from opscenter.models.servers import Server
from opscenter.models.storage import StorageProvider

__all__ = [
    "ApiKey",
    "AuditLog",
    "Backup",
    "Base",
    "IdMixin",
    "Job",
    "RefreshToken",
    "RetentionPolicy",
    "Role",
    "Schedule",
    "ScheduleRun",
    "Server",
    "StorageProvider",
    "Team",
    "TimestampMixin",
    "User",
    "team_members",
]

"""All ORM models, a module per domain, imported here so metadata is complete."""

from opscenter.models.audit import AuditLog
from opscenter.models.auth import ApiKey, RefreshToken, Role, Team, User, team_members
from opscenter.models.backups import Backup, BackupStatus, Job, JobStatus
from opscenter.models.base import Base, IdMixin, TimestampMixin
from opscenter.models.encryption import EscrowRecipient
from opscenter.models.external_jobs import ExternalJob, ExternalJobReport
from opscenter.models.integrations import Integration, WebhookDelivery
from opscenter.models.notifications import (
    AlertPolicy,
    Notification,
    NotificationChannel,
    NotificationPreference,
)
from opscenter.models.resources import (
    AlertStatus,
    ResourceAlert,
    ResourceAlertRule,
    ResourceSample,
    RollupMark,
)
from opscenter.models.schedules import RetentionPolicy, Schedule, ScheduleRun
from opscenter.models.servers import Server
from opscenter.models.storage import StorageProvider
from opscenter.models.verification import VerificationRun

__all__ = [
    "AlertPolicy",
    "AlertStatus",
    "ApiKey",
    "AuditLog",
    "Backup",
    "BackupStatus",
    "Base",
    "EscrowRecipient",
    "ExternalJob",
    "ExternalJobReport",
    "IdMixin",
    "Integration",
    "Job",
    "JobStatus",
    "Notification",
    "NotificationChannel",
    "NotificationPreference",
    "RefreshToken",
    "ResourceAlert",
    "ResourceAlertRule",
    "ResourceSample",
    "RetentionPolicy",
    "Role",
    "RollupMark",
    "Schedule",
    "ScheduleRun",
    "Server",
    "StorageProvider",
    "Team",
    "TimestampMixin",
    "User",
    "VerificationRun",
    "WebhookDelivery",
    "team_members",
]

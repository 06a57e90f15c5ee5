"""All ORM models, a module per domain, imported here so metadata is complete."""

from opscenter.models.ai_models import AiCall, AiFallbackConfig, AiModel, AiPrompt
from opscenter.models.analytics import AnalyticsReport, AnalyticsReportResult, InsightDismissal
from opscenter.models.audit import AuditCheckpoint, AuditLog
from opscenter.models.auth import ApiKey, RefreshToken, Role, Team, User, team_members
from opscenter.models.backups import Backup, BackupStatus, Job, JobStatus
from opscenter.models.base import Base, IdMixin, TimestampMixin
from opscenter.models.commands import (
    Command,
    CommandExecution,
    CommandResult,
    ResultStatus,
    Sop,
    SopRun,
    SopStepRun,
    SopVersion,
)
from opscenter.models.compliance import ComplianceEvidence, ComplianceReport
from opscenter.models.encryption import EscrowRecipient
from opscenter.models.external_jobs import ExternalJob, ExternalJobReport
from opscenter.models.finops import (
    Budget,
    CostCredit,
    CostImport,
    CostLine,
    CostRollup,
    CostRollupPart,
    CostTagSet,
    Recommendation,
    StoragePrice,
)
from opscenter.models.fuzzing import FuzzEngine, FuzzingCampaign, FuzzingCrash
from opscenter.models.incidents import (
    Evidence,
    EvidenceAccess,
    Incident,
    IncidentEvent,
    IncidentParticipant,
    IncidentStatus,
    Task,
    TaskStatus,
)
from opscenter.models.integrations import Integration, WebhookDelivery
from opscenter.models.knowledge import (
    KnowledgeArticle,
    KnowledgeFeedback,
    KnowledgeLink,
    KnowledgeTag,
    KnowledgeVersion,
)
from opscenter.models.notifications import (
    AlertPolicy,
    Notification,
    NotificationChannel,
    NotificationPreference,
)
from opscenter.models.reports import Report, ReportVersion
from opscenter.models.resources import (
    AlertStatus,
    ResourceAlert,
    ResourceAlertRule,
    ResourceSample,
    RollupMark,
)
from opscenter.models.schedules import RetentionPolicy, Schedule, ScheduleRun
from opscenter.models.security import (
    Finding,
    FindingStatus,
    SecurityAsset,
    SecurityImport,
)
from opscenter.models.security_scan import SecurityPolicy, SecurityScan, SurfaceAllow
from opscenter.models.servers import Server
from opscenter.models.sso import SsoIdentity, SsoLogin, SsoProvider
from opscenter.models.storage import StorageProvider
from opscenter.models.verification import VerificationRun

__all__ = [
    "AiCall",
    "AiFallbackConfig",
    "AiModel",
    "AiPrompt",
    "AlertPolicy",
    "AlertStatus",
    "AnalyticsReport",
    "AnalyticsReportResult",
    "ApiKey",
    "AuditCheckpoint",
    "AuditLog",
    "Backup",
    "BackupStatus",
    "Base",
    "Budget",
    "Command",
    "CommandExecution",
    "CommandResult",
    "ComplianceEvidence",
    "ComplianceReport",
    "CostCredit",
    "CostImport",
    "CostLine",
    "CostRollup",
    "CostRollupPart",
    "CostTagSet",
    "EscrowRecipient",
    "Evidence",
    "EvidenceAccess",
    "ExternalJob",
    "ExternalJobReport",
    "Finding",
    "FindingStatus",
    "FuzzEngine",
    "FuzzingCampaign",
    "FuzzingCrash",
    "IdMixin",
    "Incident",
    "IncidentEvent",
    "IncidentParticipant",
    "IncidentStatus",
    "InsightDismissal",
    "Integration",
    "Job",
    "JobStatus",
    "KnowledgeArticle",
    "KnowledgeFeedback",
    "KnowledgeLink",
    "KnowledgeTag",
    "KnowledgeVersion",
    "Notification",
    "NotificationChannel",
    "NotificationPreference",
    "Recommendation",
    "RefreshToken",
    "Report",
    "ReportVersion",
    "ResourceAlert",
    "ResourceAlertRule",
    "ResourceSample",
    "ResultStatus",
    "RetentionPolicy",
    "Role",
    "RollupMark",
    "Schedule",
    "ScheduleRun",
    "SecurityAsset",
    "SecurityImport",
    "SecurityPolicy",
    "SecurityScan",
    "Server",
    "Sop",
    "SopRun",
    "SopStepRun",
    "SopVersion",
    "SsoIdentity",
    "SsoLogin",
    "SsoProvider",
    "StoragePrice",
    "StorageProvider",
    "SurfaceAllow",
    "Task",
    "TaskStatus",
    "Team",
    "TimestampMixin",
    "User",
    "VerificationRun",
    "WebhookDelivery",
    "team_members",
]

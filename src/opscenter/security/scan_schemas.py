"""Request and response models of security policies, scans and the surface allow-list."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from opscenter.core.schemas import Id, InputModel, OutputModel, UtcDatetime
from opscenter.models.security import Severity
from opscenter.models.security_scan import ScanScope, ScanStatus


class ScanSource(StrEnum):
    """The scanner name of the findings a scan makes (next to the imported reports')."""

    POSTURE = "posture"
    SURFACE = "surface"


class Check(StrEnum):
    """The check types a policy runs; a custom policy is one of them with its parameters."""

    ADMIN_PASSWORD_AGE = "admin_password_age"  # noqa: S105 (a check name, no password)
    API_KEY_EXPIRY = "api_key_expiry"
    BACKUP_ENCRYPTION = "backup_encryption"
    BACKUP_RPO = "backup_rpo"
    ESCROW_KEY = "escrow_key"
    INACTIVE_USERS = "inactive_users"
    WEAK_SETTINGS = "weak_settings"
    TLS_EXPIRY = "tls_expiry"
    TLS_PROTOCOL = "tls_protocol"
    TLS_CHAIN = "tls_chain"
    TLS_SELF_SIGNED = "tls_self_signed"
    OPEN_PORTS = "open_ports"


class Framework(StrEnum):
    SOC2 = "soc2"
    ISO27001 = "iso27001:2022"
    NIST_CSF = "nist-csf-2.0"


# The control id shapes of each framework: SOC 2 Trust Services Criteria (CC6.1, A1.2,
# C1.1), ISO/IEC 27001:2022 Annex A (A.5.17 .. A.8.34), NIST CSF 2.0 (PR.DS-11).
CONTROL_FORMS = {
    Framework.SOC2: re.compile(r"(CC[1-9]|A1|C1|PI1|P[1-8])\.\d{1,2}"),
    Framework.ISO27001: re.compile(r"A\.[5-8]\.\d{1,2}"),
    Framework.NIST_CSF: re.compile(r"(GV|ID|PR|DE|RS|RC)\.[A-Z]{2}-\d{2}"),
}
Technique = Annotated[str, StringConstraints(pattern=r"^T\d{4}(\.\d{3})?$")]
Key = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{2,63}$")]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=2000)]


class ComplianceRef(InputModel):
    framework: Framework
    control: Annotated[str, StringConstraints(max_length=20)]

    @model_validator(mode="after")
    def _known_form(self) -> ComplianceRef:
        if not CONTROL_FORMS[self.framework].fullmatch(self.control):
            raise ValueError(f"{self.control!r} is not a {self.framework} control id")
        return self


Refs = Annotated[list[ComplianceRef], Field(max_length=30)]
Techniques = Annotated[list[Technique], Field(max_length=30)]


class PolicyIn(InputModel):
    key: Key
    check: Check
    title: Title
    description: Description = ""
    severity: Severity = Severity.MEDIUM
    enabled: bool = True
    parameters: dict[str, Any] = {}
    compliance: Refs = []
    attack: Techniques = []


class PolicyUpdate(InputModel):
    title: Title | None = None
    description: Description | None = None
    severity: Severity | None = None
    enabled: bool | None = None
    parameters: dict[str, Any] | None = None
    compliance: Refs | None = None
    attack: Techniques | None = None


class ComplianceOut(OutputModel):
    framework: str
    control: str


class PolicyOut(OutputModel):
    id: int
    key: str
    check: str
    kind: str = Field(description="posture (this installation) or surface (assets)")
    title: str
    description: str
    severity: Severity
    enabled: bool
    builtin: bool
    parameters: dict[str, Any]
    compliance: list[ComplianceOut]
    attack: list[str]
    updated_at: UtcDatetime


class ScanIn(InputModel):
    scope: ScanScope = ScanScope.BOTH
    asset_ids: Annotated[list[Id], Field(max_length=100)] | None = Field(
        None, description="Surface: only these assets (default: every asset you see)"
    )
    team_id: Id | None = Field(None, description="The team that owns the scan's findings")


class ScanResult(OutputModel):
    policy: str
    asset_id: int
    finding_id: int | None
    title: str
    severity: Severity


class ScanOut(OutputModel):
    id: int
    team_id: int
    scope: ScanScope
    asset_ids: list[int]
    status: ScanStatus
    job_id: int | None
    progress: float | None = Field(None, description="0-100 while the job runs")
    phase: str | None = None
    checks_run: int
    targets_probed: int
    targets_skipped: list[str] = Field(description="Addresses left out: not on the allow-list")
    reported: int
    new: int
    reopened: int
    closed: int
    results: list[ScanResult]
    error: str | None
    created_at: UtcDatetime
    finished_at: UtcDatetime | None


def _entry(value: str) -> str:
    value = value.strip().lower()
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        pass
    if not re.fullmatch(
        r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}", value
    ):
        raise ValueError(f"{value!r} is neither an address range (CIDR) nor a host name")
    return value


AllowEntry = Annotated[str, StringConstraints(max_length=255), AfterValidator(_entry)]


class AllowListIn(InputModel):
    entries: Annotated[list[AllowEntry], Field(max_length=500)]


class AllowListOut(OutputModel):
    entries: list[str]

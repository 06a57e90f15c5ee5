"""Security policies: the check types a policy can run, their parameters (validated per
type), compliance references and ATT&CK technique ids; listing, custom policies made from
a check type, and admins' changes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.attack import catalogue as attack
from opscenter.core.errors import Conflict, InvalidInput, NotFound
from opscenter.core.schemas import InputModel
from opscenter.models.security_scan import SecurityPolicy
from opscenter.security.scan_schemas import Check, PolicyIn, PolicyOut, PolicyUpdate

Days = Annotated[int, Field(ge=1, le=3650)]
Port = Annotated[int, Field(ge=1, le=65535)]
#: Ports the open-port check tries besides an asset's declared ones (remote access,
#: mail, file sharing, databases and caches that should not face a network unasked).
COMMON_PORTS = [21, 22, 23, 25, 80, 110, 143, 443, 445, 1433, 3306, 3389, 5432, 5900, 6379,
                8080, 8443, 9200, 11211, 27017]  # fmt: skip


class Kind(StrEnum):
    POSTURE = "posture"
    SURFACE = "surface"


class AdminPasswordAge(InputModel):
    max_days: Days = 90


class ApiKeyExpiry(InputModel):
    max_lifetime_days: Days = 365


class BackupEncryption(InputModel):
    window_days: Days = 30


class BackupRpo(InputModel):
    rpo_intervals: float = Field(
        2.0, ge=1, le=100, description="RPO = the schedule's interval times this"
    )


class NoParameters(InputModel):
    pass


class InactiveUsers(InputModel):
    days: Days = 90


class WeakSettings(InputModel):
    max_access_token_minutes: int = Field(60, ge=1, le=1440)
    min_jwt_secret_length: int = Field(32, ge=16, le=512)


class TlsExpiry(InputModel):
    warn_days: int = Field(30, ge=1, le=365)
    critical_days: int = Field(7, ge=0, le=365)

    @model_validator(mode="after")
    def _ordered(self) -> TlsExpiry:
        if self.critical_days > self.warn_days:
            raise ValueError("critical_days must not exceed warn_days")
        return self


class TlsProtocol(InputModel):
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"


class OpenPorts(InputModel):
    ports: Annotated[list[Port], Field(max_length=200)] = COMMON_PORTS
    timeout_seconds: float = Field(0.5, ge=0.05, le=5)


#: What each check type takes and whether it looks at this installation or at assets.
CHECKS: dict[Check, tuple[Kind, type[InputModel]]] = {
    Check.ADMIN_PASSWORD_AGE: (Kind.POSTURE, AdminPasswordAge),
    Check.API_KEY_EXPIRY: (Kind.POSTURE, ApiKeyExpiry),
    Check.BACKUP_ENCRYPTION: (Kind.POSTURE, BackupEncryption),
    Check.BACKUP_RPO: (Kind.POSTURE, BackupRpo),
    Check.ESCROW_KEY: (Kind.POSTURE, NoParameters),
    Check.INACTIVE_USERS: (Kind.POSTURE, InactiveUsers),
    Check.WEAK_SETTINGS: (Kind.POSTURE, WeakSettings),
    Check.TLS_EXPIRY: (Kind.SURFACE, TlsExpiry),
    Check.TLS_PROTOCOL: (Kind.SURFACE, TlsProtocol),
    Check.TLS_CHAIN: (Kind.SURFACE, NoParameters),
    Check.TLS_SELF_SIGNED: (Kind.SURFACE, NoParameters),
    Check.OPEN_PORTS: (Kind.SURFACE, OpenPorts),
}


def kind_of(check: str) -> Kind:
    return CHECKS[Check(check)][0]


def parameters(check: str, raw: dict[str, Any]) -> BaseModel:
    """The policy's parameters as its check type's model, defaults filled in."""
    return CHECKS[Check(check)][1].model_validate(raw)


def _checked(check: Check, raw: dict[str, Any]) -> dict[str, Any]:
    try:
        return CHECKS[check][1].model_validate(raw).model_dump(mode="json")
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "parameters"
        raise InvalidInput(f"parameters.{where}: {first['msg']}") from None


def policy_out(policy: SecurityPolicy) -> PolicyOut:
    return PolicyOut.model_validate(
        {**{c: getattr(policy, c) for c in PolicyOut.model_fields if c != "kind"},
         "kind": kind_of(policy.check)}
    )  # fmt: skip


async def list_policies(session: AsyncSession) -> list[SecurityPolicy]:
    return list(await session.scalars(select(SecurityPolicy).order_by(SecurityPolicy.id)))


async def enabled(session: AsyncSession, kind: Kind) -> list[SecurityPolicy]:
    return [p for p in await list_policies(session) if p.enabled and kind_of(p.check) == kind]


async def get_policy(session: AsyncSession, policy_id: int) -> SecurityPolicy:
    policy = await session.get(SecurityPolicy, policy_id)
    if policy is None:
        raise NotFound(f"Policy {policy_id} not found")
    return policy


async def create_policy(session: AsyncSession, body: PolicyIn) -> SecurityPolicy:
    """A custom policy: one of the check types with its own parameters."""
    if await session.scalar(select(SecurityPolicy.id).where(SecurityPolicy.key == body.key)):
        raise Conflict(f"A policy with key {body.key!r} exists")
    policy = SecurityPolicy(
        key=body.key,
        check=body.check.value,
        title=body.title,
        description=body.description,
        severity=body.severity,
        enabled=body.enabled,
        builtin=False,
        parameters=_checked(body.check, body.parameters),
        compliance=[r.model_dump() for r in body.compliance],
        attack=attack.checked(body.attack),
    )
    session.add(policy)
    await session.flush()
    return policy


async def update_policy(
    session: AsyncSession, policy_id: int, body: PolicyUpdate
) -> tuple[SecurityPolicy, list[str]]:
    policy = await get_policy(session, policy_id)
    changes = body.model_dump(exclude_unset=True)
    techniques = None if body.attack is None else attack.checked(body.attack)
    if "parameters" in changes:
        # Given parameters replace only the ones named; the rest keep their values.
        merged = {**policy.parameters, **(body.parameters or {})}
        policy.parameters = _checked(Check(policy.check), merged)
    if body.compliance is not None:
        policy.compliance = [r.model_dump() for r in body.compliance]
    if techniques is not None:
        policy.attack = techniques
    for field in ("title", "description", "severity", "enabled"):
        if field in changes and changes[field] is not None:
            setattr(policy, field, changes[field])
    await session.flush()
    return policy, sorted(changes)

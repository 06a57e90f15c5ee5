"""Incidents: lifecycle, participants, a timeline of every change, MTTA/MTTR, alerts that
repeat into the open incident instead of opening another."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.attack import catalogue as attack
from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.errors import Conflict, InvalidInput
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.incidents.schemas import (
    IncidentCreate,
    IncidentMetrics,
    IncidentOut,
    IncidentUpdate,
    Person,
    SourceType,
    TimelineEntry,
)
from opscenter.models import (
    Backup,
    ExternalJob,
    Incident,
    IncidentEvent,
    IncidentParticipant,
    IncidentStatus,
    User,
    VerificationRun,
)

S = IncidentStatus
ORDER = (S.OPEN, S.INVESTIGATING, S.MITIGATED, S.RESOLVED, S.CLOSED)
OPEN_STATES = (S.OPEN.value, S.INVESTIGATING.value, S.MITIGATED.value)
_SOURCES: dict[SourceType, Any] = {
    SourceType.BACKUP: Backup,
    SourceType.VERIFICATION: VerificationRun,
    SourceType.EXTERNAL_JOB: ExternalJob,
}


class TransitionRefused(Conflict):
    code = "INVALID_TRANSITION"


def allowed_next(status: str) -> list[str]:
    """Forward up to resolved, skipping states if need be; closed only from resolved and
    final; resolved may reopen to investigating."""
    current = S(status)
    if current is S.CLOSED:
        return []
    if current is S.RESOLVED:
        return [S.INVESTIGATING.value, S.CLOSED.value]
    return [s.value for s in ORDER[ORDER.index(current) + 1 : ORDER.index(S.RESOLVED) + 1]]


def jira_key(incident: Incident) -> str:
    return incident.jira_id or f"INC-{incident.id}"


@dataclass
class Filters:
    environment: str | None = None
    severity: str | None = None
    status: str | None = None
    squad: str | None = None


def incidents_query(principal: Principal, filters: Filters | None = None) -> Select[Any]:
    stmt = readable(select(Incident), Incident, principal)
    f = filters or Filters()
    for column, value in (
        (Incident.environment, f.environment),
        (Incident.severity, f.severity),
        (Incident.status, f.status),
        (Incident.squad, f.squad),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return stmt.order_by(Incident.created_at.desc(), Incident.id.desc())


async def get_incident(session: AsyncSession, principal: Principal, incident_id: int) -> Incident:
    return await get_readable(session, Incident, incident_id, principal, name="Incident")


async def outputs(session: AsyncSession, incidents: Sequence[Incident]) -> list[IncidentOut]:
    """Incidents with their commander and participants, in two queries for the whole page."""
    ids = [i.id for i in incidents]
    members: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        rows = await session.execute(
            select(IncidentParticipant.incident_id, IncidentParticipant.user_id)
            .where(IncidentParticipant.incident_id.in_(ids))
            .order_by(IncidentParticipant.id)
        )
        for incident_id, user_id in rows.all():
            members[incident_id].append(user_id)
    user_ids = {u for us in members.values() for u in us} | {
        i.commander_id for i in incidents if i.commander_id is not None
    }
    names = await usernames(session, user_ids)
    return [_out(i, names, members[i.id]) for i in incidents]


async def output(session: AsyncSession, incident: Incident) -> IncidentOut:
    return (await outputs(session, [incident]))[0]


async def usernames(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, str]:
    ids = set(user_ids)
    if not ids:
        return {}
    rows = await session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {uid: name for uid, name in rows.all()}


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 3)


def _out(incident: Incident, names: dict[int, str], members: list[int]) -> IncidentOut:
    commander = incident.commander_id
    return IncidentOut(
        id=incident.id,
        jira_id=jira_key(incident),
        title=incident.title,
        description=incident.description,
        severity=incident.severity,
        status=incident.status,
        environment=incident.environment,
        squad=incident.squad,
        affected_services=list(incident.affected_services or []),
        attack_techniques=list(incident.attack_techniques or []),
        team_id=incident.team_id,
        commander=Person(id=commander, username=names.get(commander, "?")) if commander else None,
        participants=[Person(id=u, username=names.get(u, "?")) for u in members],
        source_type=incident.source_type,
        source_id=incident.source_id,
        alert_count=incident.alert_count,
        allowed_transitions=allowed_next(incident.status),
        acknowledged_at=incident.acknowledged_at,
        mitigated_at=incident.mitigated_at,
        resolved_at=incident.resolved_at,
        closed_at=incident.closed_at,
        time_to_acknowledge_seconds=_seconds(incident.created_at, incident.acknowledged_at),
        time_to_resolve_seconds=_seconds(incident.created_at, incident.resolved_at),
        created_at=incident.created_at,
        updated_at=incident.updated_at,
    )


class Timeline:
    """Collects an incident's timeline lines for one change, written together."""

    def __init__(self, session: AsyncSession, incident: Incident, actor: Principal) -> None:
        self.session = session
        self.incident = incident
        self.actor = actor
        self.entries: list[IncidentEvent] = []

    def add(
        self, kind: str, field: str | None = None, old: object = None, new: object = None
    ) -> None:
        self.entries.append(
            IncidentEvent(
                incident_id=self.incident.id,
                at=utcnow(),
                actor_id=self.actor.user_id or None,
                actor=self.actor.username,
                kind=kind,
                field=field,
                old_value=_text(old),
                new_value=_text(new),
            )
        )

    async def flush(self) -> None:
        self.session.add_all(self.entries)
        await self.session.flush()


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


async def check_users(session: AsyncSession, user_ids: Iterable[int]) -> None:
    wanted = set(user_ids)
    if not wanted:
        return
    found = set(
        (
            await session.scalars(
                select(User.id).where(User.id.in_(wanted), User.is_active.is_(True))
            )
        ).all()
    )
    if missing := sorted(wanted - found):
        raise InvalidInput(f"No active user with id {', '.join(map(str, missing))}")


async def _check_source(
    session: AsyncSession, principal: Principal, team_id: int, kind: SourceType, ident: int
) -> None:
    model = _SOURCES[kind]
    source = await get_readable(session, model, ident, principal, name=kind.value.title())
    if source.team_id != team_id:
        raise InvalidInput(f"{kind.value} {ident} belongs to another team than the incident")


async def create_incident(
    session: AsyncSession, principal: Principal, data: IncidentCreate
) -> tuple[Incident, bool]:
    """The new incident, or the open one this alert already raised (and False)."""
    team_id = data.team_id or min(principal.team_ids, default=None)
    if team_id is None:
        raise InvalidInput("You belong to no team; give team_id or ask an admin to add you")
    check_team_access(principal, team_id)
    techniques = attack.checked(data.attack_techniques or [])
    if (data.source_type is None) != (data.source_id is None):
        raise InvalidInput("Give source_type and source_id together, or neither")
    alert_key = None
    if data.source_type is not None and data.source_id is not None:
        await _check_source(session, principal, team_id, data.source_type, data.source_id)
        alert_key = f"{data.source_type.value}:{data.source_id}"
        existing = await _repeat(session, principal, team_id, alert_key)
        if existing is not None:
            return existing, False
    participants = list(dict.fromkeys(data.participant_ids))
    await check_users(session, [*participants, *filter(None, [data.commander_id])])
    incident = Incident(
        team_id=team_id,
        title=data.title,
        description=data.description,
        severity=data.severity.value,
        environment=data.environment.value,
        squad=data.squad,
        affected_services=list(dict.fromkeys(data.affected_services or [])),
        attack_techniques=techniques,
        status=S.OPEN.value,
        commander_id=data.commander_id,
        source_type=data.source_type.value if data.source_type else None,
        source_id=data.source_id,
        alert_key=alert_key,
        alert_count=1 if alert_key else 0,
        created_by=principal.user_id or None,
    )
    session.add(incident)
    await session.flush()
    incident.jira_id = jira_key(incident)
    session.add_all(IncidentParticipant(incident_id=incident.id, user_id=u) for u in participants)
    timeline = Timeline(session, incident, principal)
    timeline.add("created", "status", None, S.OPEN.value)
    if alert_key:
        timeline.add("raised_by", "source", None, alert_key)
    await timeline.flush()
    return incident, True


async def _repeat(
    session: AsyncSession, principal: Principal, team_id: int, alert_key: str
) -> Incident | None:
    """The open incident this alert already raised, with the repeat counted, or None."""
    existing = await session.scalar(
        select(Incident)
        .where(
            Incident.team_id == team_id,
            Incident.alert_key == alert_key,
            Incident.status.in_(OPEN_STATES),
        )
        .order_by(Incident.id.desc())
        .limit(1)
    )
    if existing is not None:
        existing.alert_count += 1
        existing.updated_at = utcnow()
        timeline = Timeline(session, existing, principal)
        timeline.add(
            "alert_repeated", "alert_count", existing.alert_count - 1, existing.alert_count
        )
        await timeline.flush()
    return existing


@dataclass
class Alert:
    """An alert an alert policy's `open_incident` action turns into an incident."""

    team_id: int
    title: str
    description: str
    severity: str
    environment: str
    squad: str
    alert_key: str
    source: tuple[SourceType, int] | None = None


async def open_from_alert(
    session: AsyncSession, actor: Principal, alert: Alert
) -> tuple[Incident, bool]:
    """A new incident raised by an alert, or its open incident with the repeat counted."""
    existing = await _repeat(session, actor, alert.team_id, alert.alert_key)
    if existing is not None:
        return existing, False
    incident = Incident(
        team_id=alert.team_id,
        title=alert.title,
        description=alert.description,
        severity=alert.severity,
        environment=alert.environment,
        squad=alert.squad,
        affected_services=[],
        attack_techniques=[],
        status=S.OPEN.value,
        source_type=alert.source[0].value if alert.source else None,
        source_id=alert.source[1] if alert.source else None,
        alert_key=alert.alert_key,
        alert_count=1,
        created_by=None,
    )
    session.add(incident)
    await session.flush()
    incident.jira_id = jira_key(incident)
    timeline = Timeline(session, incident, actor)
    timeline.add("created", "status", None, S.OPEN.value)
    timeline.add("raised_by", "source", None, alert.alert_key)
    await timeline.flush()
    return incident, True


def _move(incident: Incident, target: S, timeline: Timeline) -> None:
    allowed = allowed_next(incident.status)
    if target.value not in allowed:
        nexts = ", ".join(allowed) if allowed else "none: closed is final"
        raise TransitionRefused(
            f"Incident {incident.id} is {incident.status}; it can move to: {nexts}"
        )
    now = utcnow()
    old = incident.status
    incident.status = target.value
    timeline.add("status", "status", old, target.value)
    reached = ORDER.index(target)

    def stamp(field: str, at_least: S) -> None:
        if reached >= ORDER.index(at_least) and getattr(incident, field) is None:
            setattr(incident, field, now)
            timeline.add("timestamp", field, None, isoformat_z(now))

    stamp("acknowledged_at", S.INVESTIGATING)
    stamp("mitigated_at", S.MITIGATED)
    stamp("resolved_at", S.RESOLVED)
    stamp("closed_at", S.CLOSED)
    if target is S.INVESTIGATING and old == S.RESOLVED.value:
        # Reopened: it is resolved again only when it is resolved again (MTTR grows).
        timeline.add(
            "timestamp",
            "resolved_at",
            isoformat_z(incident.resolved_at) if incident.resolved_at else None,
            None,
        )
        incident.resolved_at = None


async def update_incident(
    session: AsyncSession, principal: Principal, incident_id: int, data: IncidentUpdate
) -> tuple[Incident, list[str]]:
    """The incident and the names of the fields that changed (an empty PATCH changes none)."""
    incident = await get_incident(session, principal, incident_id)
    given = data.model_fields_set
    timeline = Timeline(session, incident, principal)
    if incident.status == S.CLOSED.value and given - {"status"}:
        raise Conflict(f"Incident {incident.id} is closed; a closed incident is final")
    changed: list[str] = []
    for field in ("title", "description", "severity", "environment", "squad"):
        if field in given:
            value = getattr(data, field)
            if value is None:
                raise InvalidInput(f"{field} cannot be null")
            value = getattr(value, "value", value)
            if getattr(incident, field) != value:
                timeline.add("field", field, getattr(incident, field), value)
                setattr(incident, field, value)
                changed.append(field)
    if "affected_services" in given:
        services = list(dict.fromkeys(data.affected_services or []))
        if services != list(incident.affected_services or []):
            timeline.add("field", "affected_services", incident.affected_services, services)
            incident.affected_services = services
            changed.append("affected_services")
    if "attack_techniques" in given:
        techniques = attack.checked(data.attack_techniques or [])
        if techniques != list(incident.attack_techniques or []):
            timeline.add("field", "attack_techniques", incident.attack_techniques, techniques)
            incident.attack_techniques = techniques
            changed.append("attack_techniques")
    if "commander_id" in given and data.commander_id != incident.commander_id:
        if data.commander_id is not None:
            await check_users(session, [data.commander_id])
        names = await usernames(session, filter(None, [incident.commander_id, data.commander_id]))
        timeline.add(
            "commander",
            "commander",
            names.get(incident.commander_id or 0),
            names.get(data.commander_id or 0),
        )
        incident.commander_id = data.commander_id
        changed.append("commander")
    if "participant_ids" in given:
        if data.participant_ids is None:
            raise InvalidInput("participant_ids cannot be null; give [] to remove everyone")
        if await _set_participants(session, incident, data.participant_ids, timeline):
            changed.append("participants")
    if "status" in given and data.status is not None and data.status.value != incident.status:
        _move(incident, data.status, timeline)
        changed.append("status")
    if changed:
        incident.updated_at = utcnow()
        await timeline.flush()
    return incident, changed


async def _set_participants(
    session: AsyncSession, incident: Incident, wanted_ids: list[int], timeline: Timeline
) -> bool:
    wanted = list(dict.fromkeys(wanted_ids))
    current = list(
        (
            await session.scalars(
                select(IncidentParticipant.user_id).where(
                    IncidentParticipant.incident_id == incident.id
                )
            )
        ).all()
    )
    added = [u for u in wanted if u not in current]
    removed = [u for u in current if u not in wanted]
    if not added and not removed:
        return False
    await check_users(session, added)
    names = await usernames(session, [*added, *removed])
    if removed:
        await session.execute(
            delete(IncidentParticipant).where(
                IncidentParticipant.incident_id == incident.id,
                IncidentParticipant.user_id.in_(removed),
            )
        )
    session.add_all(IncidentParticipant(incident_id=incident.id, user_id=u) for u in added)
    for u in added:
        timeline.add("participant_added", "participants", None, names.get(u))
    for u in removed:
        timeline.add("participant_removed", "participants", names.get(u), None)
    return True


def timeline_query(incident_id: int) -> Select[Any]:
    return (
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident_id)
        .order_by(IncidentEvent.id)
    )


def timeline_out(entry: IncidentEvent) -> TimelineEntry:
    return TimelineEntry.model_validate(entry)


async def note(
    session: AsyncSession, incident: Incident, actor: Principal, kind: str, new: object
) -> None:
    """One timeline line for something done beside the incident (evidence, a task)."""
    timeline = Timeline(session, incident, actor)
    timeline.add(kind, None, None, new)
    incident.updated_at = utcnow()
    await timeline.flush()


async def metrics(session: AsyncSession, principal: Principal, days: int) -> IncidentMetrics:
    """MTTA and MTTR over the incidents opened in the last `days` days."""
    since = utcnow() - timedelta(days=days)
    columns = cast(
        "Select[Any]", select(Incident.created_at, Incident.acknowledged_at, Incident.resolved_at)
    )
    stmt = readable(columns, Incident, principal).where(Incident.created_at >= since)
    rows = (await session.execute(stmt)).all()
    acks = [(a - c).total_seconds() for c, a, _ in rows if a is not None]
    fixes = [(r - c).total_seconds() for c, _, r in rows if r is not None]
    return IncidentMetrics(
        days=days,
        incidents=len(rows),
        acknowledged=len(acks),
        resolved=len(fixes),
        mtta_seconds=round(sum(acks) / len(acks), 1) if acks else None,
        mttr_seconds=round(sum(fixes) / len(fixes), 1) if fixes else None,
    )


async def count_by_status(session: AsyncSession, principal: Principal) -> dict[str, int]:
    counts = cast("Select[Any]", select(Incident.status, func.count()).group_by(Incident.status))
    stmt = readable(counts, Incident, principal)
    found: dict[str, int] = {s: int(n) for s, n in (await session.execute(stmt)).all()}
    return {s.value: found.get(s.value, 0) for s in ORDER}

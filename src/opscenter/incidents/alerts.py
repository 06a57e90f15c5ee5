"""Incidents opened by alert policies: a subscriber on the event bus. For each event an
enabled policy with the `open_incident` action matches (the notifications domain's own
matching: event types, minimum severity, environment, server, schedule), it opens an
incident linked to what raised it, or adds the repeat to the one still open. The
notifications domain only stores the action; this domain acts on it, so neither imports
the other in a circle."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from opscenter.audit import service as audit
from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.core.principal import SYSTEM
from opscenter.incidents import jira, service
from opscenter.incidents.schemas import Environment, SourceType
from opscenter.models import AlertPolicy, Backup, ExternalJob, VerificationRun
from opscenter.notifications.dispatch import alertable, describe, facts_of, policy_matches, severity

log = get_logger("opscenter.incidents")

_ENVIRONMENTS = {e.value for e in Environment}
# A resource threshold rule with "open an incident" set asks for one itself, no policy
# needed; its alert severity maps onto the incident scale.
RESOURCE_FIRED = "resource_alert.fired"
_RESOURCE_SEVERITY = {"critical": "critical", "error": "high", "warning": "medium", "info": "low"}


def source_of(event: Event) -> tuple[SourceType, int] | None:
    """What raised the event, when it is something an incident can link to."""
    data = event.data
    prefix = event.type.partition(".")[0]
    if prefix == "verification" and isinstance(data.get("run_id"), int):
        return SourceType.VERIFICATION, data["run_id"]
    if prefix == "external_job" and isinstance(data.get("external_job_id"), int):
        return SourceType.EXTERNAL_JOB, data["external_job_id"]
    if prefix == "backup" and isinstance(data.get("backup_id"), int):
        return SourceType.BACKUP, data["backup_id"]
    return None


def alert_key_of(event: Event, source: tuple[SourceType, int] | None) -> str:
    """The same key a person's incident for this source gets, so both de-duplicate; an
    event without a linkable source repeats per type and subject (a resource rule's
    firings per rule, source and instance, so a flapping disk stays one incident)."""
    if event.type == RESOURCE_FIRED:
        data = event.data
        return f"resource_rule:{data.get('rule_id')}:{data.get('source')}:{data.get('label')}"[:100]
    if source is not None:
        return f"{source[0].value}:{source[1]}"
    keys = ("server_id", "integration_id", "job_id")
    subject = next((f"{k}={event.data[k]}" for k in keys if k in event.data), "")
    return f"{event.type}:{subject}"[:100]


_MODELS: dict[SourceType, Any] = {
    SourceType.BACKUP: Backup,
    SourceType.VERIFICATION: VerificationRun,
    SourceType.EXTERNAL_JOB: ExternalJob,
}


class IncidentOpener:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="incident-opener")
        await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with self.ctx.events.subscribe() as queue:
            self._ready.set()
            while True:
                event = await queue.get()
                # Incidents' own events never open incidents (no loop).
                if not alertable(event) or event.type.startswith(("incident.", "task.")):
                    continue
                try:
                    await self.handle(event)
                except Exception:
                    log.exception("opening an incident failed", event_type=event.type)

    async def handle(self, event: Event) -> int | None:
        """The id of the incident opened or added to, or None when no policy asks."""
        if event.team_id is None:
            return None
        level = severity(event)
        async with self.ctx.db.write_session() as session:
            policies = list(
                await session.scalars(
                    select(AlertPolicy)
                    .where(
                        AlertPolicy.team_id == event.team_id,
                        AlertPolicy.is_enabled.is_(True),
                        AlertPolicy.open_incident.is_not(None),
                    )
                    .order_by(AlertPolicy.id)
                )
            )
            wants_incident = event.type == RESOURCE_FIRED and event.data.get("open_incident")
            if not policies and not wants_incident:
                return None
            facts = await facts_of(session, event)
            policy = next((p for p in policies if policy_matches(p, event, level, facts)), None)
            if policy is not None and policy.open_incident:
                action, asked_by = policy.open_incident, f"alert policy '{policy.name}'"
            elif event.type == RESOURCE_FIRED and event.data.get("open_incident"):
                mapped = _RESOURCE_SEVERITY.get(str(event.data.get("alert_severity")), "high")
                action = {"severity": mapped}
                asked_by = f"resource rule {event.data.get('rule_id')}"
            else:
                return None
            source = source_of(event)
            if source is not None:
                linked = await session.get(_MODELS[source[0]], source[1])
                if linked is None or linked.team_id != event.team_id:
                    source = None  # gone, or not this team's: do not link to it
            title, message = describe(event, level)
            environment = (
                facts.environment
                if facts.environment in _ENVIRONMENTS
                else str(action.get("environment") or "production")
            )
            alert = service.Alert(
                team_id=event.team_id,
                title=title if len(title) >= 3 else f"Alert: {event.type}",
                description=f"{message}\n\nOpened by {asked_by}.",
                severity=str(action.get("severity") or "high"),
                environment=environment,
                squad=str(action.get("squad") or "ops"),
                alert_key=alert_key_of(event, source),
                source=source,
            )
            incident, created = await service.open_from_alert(session, SYSTEM, alert)
            await audit.record(
                session,
                action="incident.create" if created else "incident.alert_repeated",
                actor=SYSTEM,
                resource_type="incident",
                resource_id=incident.id,
                details={
                    "policy_id": policy.id if policy is not None else None,
                    "event_type": event.type,
                    "source": incident.alert_key,
                },
                team_id=incident.team_id,
            )
            if created:
                incident = await jira.file_issue(self.ctx, session, incident, SYSTEM)
            out = await service.output(session, incident)
            await session.commit()
        action_name = "created" if created else "updated"
        data = out.model_dump(mode="json") | {"incident_id": out.id}
        self.ctx.events.publish(Event(f"incident.{action_name}", data, team_id=out.team_id))
        return out.id

"""The registry's second use in the product: a summary of an incident's timeline, made
through the team's `incident_summary` chain (or its default chain). The incident and its
timeline are read through the incidents service, so the reader's team scoping holds. The
team can replace the built-in prompt with its own `incident-timeline-summary` prompt
(label production); the answer names the model that gave it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.ai_models import gateway, service
from opscenter.ai_models.schemas import IncidentSummary
from opscenter.core.clock import isoformat_z
from opscenter.core.principal import Principal
from opscenter.incidents import service as incidents
from opscenter.models import IncidentEvent

PROMPT_NAME = "incident-timeline-summary"
PURPOSE = "incident_summary"
#: The newest entries are sent; a long-running incident's oldest ones are only counted.
MAX_ENTRIES = 300
MAX_VALUE = 300
SYSTEM = (
    "You are an incident commander writing for on-call engineers and managers. Summarize "
    "an incident from its timeline in plain words: what happened, the current state, who "
    "is involved and what remains open. Use only the facts given. Be brief."
)
TEMPLATE = (
    "Incident {{key}}: {{title}}\n"
    "Severity: {{severity}}. Status: {{status}}. Environment: {{environment}}. "
    "Squad: {{squad}}. Affected services: {{services}}.\n"
    "Commander: {{commander}}. Participants: {{participants}}.\n"
    "Description:\n{{description}}\n\n"
    "Timeline, oldest first (time, who, what, from -> to):\n{{timeline}}\n\n"
    "Summarize this incident."
)


def _value(text: str | None) -> str:
    if text is None:
        return "-"
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "…"


def _line(entry: IncidentEvent) -> str:
    what = f"{entry.kind} {entry.field}" if entry.field else entry.kind
    return (
        f"{isoformat_z(entry.at)} {entry.actor}: {what}: "
        f"{_value(entry.old_value)} -> {_value(entry.new_value)}"
    )


async def summarize_incident(
    app: gateway.Services, session: AsyncSession, principal: Principal, incident_id: int
) -> IncidentSummary:
    incident = await incidents.get_incident(session, principal, incident_id)
    newest_first = incidents.timeline_query(incident.id).order_by(None)
    rows = list(
        await session.scalars(newest_first.order_by(IncidentEvent.id.desc()).limit(MAX_ENTRIES + 1))
    )
    lines = [_line(e) for e in reversed(rows[:MAX_ENTRIES])]
    if len(rows) > MAX_ENTRIES:
        lines.insert(0, "(older entries left out)")
    out = await incidents.output(session, incident)
    values = {
        "key": out.jira_id,
        "title": out.title,
        "severity": out.severity,
        "status": out.status,
        "environment": out.environment,
        "squad": out.squad,
        "services": ", ".join(out.affected_services) or "none named",
        "commander": out.commander.username if out.commander else "none",
        "participants": ", ".join(p.username for p in out.participants) or "none",
        "description": out.description[:4000],
        "timeline": "\n".join(lines) or "(no entries)",
    }
    prompt = await service.find_prompt(session, incident.team_id, PROMPT_NAME, None, None)
    if prompt is None:
        messages = service.render(PROMPT_NAME, None, SYSTEM, TEMPLATE, values)
    else:
        messages = service.render(
            prompt.name, prompt.version, prompt.system, prompt.template, values
        )
    answer = await gateway.run(
        app,
        session,
        team_id=incident.team_id,
        purpose=PURPOSE,
        messages=messages,
        user_id=principal.user_id,
    )
    return IncidentSummary(
        incident_id=incident.id,
        team_id=incident.team_id,
        summary=answer.text,
        timeline_entries=min(len(rows), MAX_ENTRIES),
        model_id=answer.model_id,
        model_name=answer.model_name,
        provider=answer.provider,
        model=answer.model,
        prompt_version=prompt.version if prompt else None,
        request_id=answer.request_id,
        cost_usd=answer.cost_usd,
    )

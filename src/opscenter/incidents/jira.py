"""An incident's Jira issue: when a Jira integration is enabled, a new incident is filed
there (REST API v2, create issue) and its real key replaces `INC-<id>` in `jira_id`.
Jira being down never loses the incident: it keeps `INC-<id>` and the timeline says why."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.context import AppContext
from opscenter.core.db import release
from opscenter.core.logging import get_logger
from opscenter.core.principal import Principal
from opscenter.incidents.service import Timeline
from opscenter.integrations.service import credentials_of
from opscenter.integrations.transport import DeliveryError, OutboundClient, redact
from opscenter.models import Incident, Integration

log = get_logger("opscenter.incidents")


async def file_issue(
    ctx: AppContext, session: AsyncSession, incident: Incident, actor: Principal
) -> Incident:
    """The incident, with its Jira key when an enabled Jira integration took it. Releases
    the session's transaction before calling Jira; the caller commits what follows."""
    jira = await session.scalar(
        select(Integration)
        .where(Integration.type == "jira", Integration.is_active.is_(True))
        .order_by(Integration.id)
        .limit(1)
    )
    if jira is None:
        return incident
    config = dict(jira.config)
    credentials = credentials_of(ctx.keyring, jira)
    fields = {
        "project": {"key": config["project_key"]},
        "issuetype": {"name": config.get("issue_type") or "Bug"},
        "summary": f"[{incident.severity}] {incident.title}"[:250],
        "description": (
            f"{incident.description}\n\nopscenter incident {incident.id}"
            f" ({incident.environment}, squad {incident.squad})"
        )[:30_000],
        "labels": ["opscenter", "incident"],
    }
    incident_id, integration_name = incident.id, jira.name
    await release(session)
    client = OutboundClient(ctx.outbound, ctx.settings.integration_timeout_seconds)
    key: str | None = None
    error: str | None = None
    try:
        sent = await client.request(
            "POST",
            str(config["base_url"]).rstrip("/") + "/rest/api/2/issue",
            auth=(config["username"], credentials["api_token"]),
            json={"fields": fields},
        )
        found = sent.body.get("key") if isinstance(sent.body, dict) else None
        if isinstance(found, str) and 0 < len(found) <= 32:
            key = found
        else:
            error = "Jira answered without an issue key"
    except DeliveryError as err:
        error = redact(err.message, credentials.values())
    finally:
        await client.close()
    # Read it again: it may have changed while Jira answered.
    fresh = await session.get(Incident, incident_id, populate_existing=True)
    if fresh is None:
        return incident
    timeline = Timeline(session, fresh, actor)
    if key is not None:
        timeline.add("jira", "jira_id", fresh.jira_id, key)
        fresh.jira_id = key
    else:
        log.warning("jira issue not created", incident_id=incident_id, error=error)
        timeline.add("jira_failed", "jira_id", None, f"{integration_name}: {error}"[:500])
    await timeline.flush()
    return fresh

"""What the incidents domain adds to the running system."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.incidents import pages
from opscenter.incidents.alerts import IncidentOpener
from opscenter.incidents.router import router


def register(registry: Registry) -> None:
    registry.api(router)
    # Alert policies with the `open_incident` action, on this process's own events.
    registry.background(lambda ctx, _: IncidentOpener(ctx), outlives_jobs=True)
    # Evidence streams to storage, bounded by OPSCENTER_EVIDENCE_MAX_BYTES.
    registry.streamed_upload("/infra/incidents/[0-9]+/evidence")
    registry.page("/incidents", pages.board_page, permission="read:incidents")
    registry.page("/incidents/{incident_id}", pages.incident_page, permission="read:incidents")
    registry.page("/tasks", pages.tasks_page, permission="read:tasks")
    registry.page("/sla", pages.sla_page, permission="read:tasks")
    registry.nav(NavLink("Operations", "Incidents", "/incidents", "read:incidents", rank=120))
    registry.nav(NavLink("Operations", "Tasks", "/tasks", "read:tasks", rank=121))
    registry.nav(NavLink("Operations", "SLA", "/sla", "read:tasks", rank=122))

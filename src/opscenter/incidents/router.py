"""Seed 004's infra module under `/infra`: incidents with their timeline and evidence,
tasks, and the weekly SLA."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.context import Ctx, SessionDep, client_ip, publish_after_commit
from opscenter.core.db import release
from opscenter.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    responses,
)
from opscenter.core.events import Event
from opscenter.core.pagination import Page, Paging, PathId, QueryId, paginate
from opscenter.core.principal import Principal
from opscenter.incidents import evidence as ev
from opscenter.incidents import jira, service, tasks
from opscenter.incidents.schemas import (
    CustodyEntry,
    Environment,
    EvidenceOut,
    IncidentCreate,
    IncidentMetrics,
    IncidentOut,
    IncidentUpdate,
    Severity,
    SlaMetrics,
    TaskCreate,
    TaskOut,
    TaskUpdate,
    TimelineEntry,
)
from opscenter.incidents.upload import Form, receive
from opscenter.models import Evidence, Incident, IncidentStatus, StorageProvider, Task, TaskStatus
from opscenter.stores.backends import StorageError

router = APIRouter(prefix="/infra", tags=["Incidents"])
ReadIncidents = Annotated[Principal, Depends(require("read:incidents"))]
WriteIncidents = Annotated[Principal, Depends(require("write:incidents"))]
ReadTasks = Annotated[Principal, Depends(require("read:tasks"))]
WriteTasks = Annotated[Principal, Depends(require("write:tasks"))]
SquadQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


def _incident_event(request: Request, action: str, out: IncidentOut) -> None:
    # Channels: `incidents`, `incident:<id>`, the environment and `squad:<name>`.
    data = out.model_dump(mode="json") | {"incident_id": out.id}
    publish_after_commit(request, Event(f"incident.{action}", data, team_id=out.team_id))


def _task_event(request: Request, action: str, out: TaskOut) -> None:
    data = out.model_dump(mode="json") | {"task_id": out.id}
    publish_after_commit(request, Event(f"task.{action}", data, team_id=out.team_id))


# -- incidents -----------------------------------------------------------------------------
@router.get("/incidents", response_model=Page[IncidentOut])
async def list_incidents(
    principal: ReadIncidents,
    session: SessionDep,
    paging: Paging,
    environment: Environment | None = None,
    severity: Severity | None = None,
    status: IncidentStatus | None = None,
    squad: SquadQuery = None,
) -> Page[IncidentOut]:
    """Newest first."""
    filters = service.Filters(
        environment and environment.value,
        severity and severity.value,
        status and status.value,
        squad,
    )
    rows, total = await paginate(session, service.incidents_query(principal, filters), paging)
    return Page.of(await service.outputs(session, rows), total, paging)


@router.post(
    "/incidents",
    response_model=IncidentOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": IncidentOut, "description": "The same alert's open incident, updated"},
        **responses(Forbidden, InvalidInput, NotFound),
    },
)
async def create_incident(
    body: IncidentCreate,
    principal: WriteIncidents,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
    response: Response,
) -> IncidentOut:
    """Opens an incident (key `INC-<id>` in `jira_id`, or the Jira issue's key when a Jira
    integration is enabled). With `source_type` and `source_id`
    (what raised it), a repeat while that alert's incident is open adds to it (200)."""
    incident, created = await service.create_incident(session, principal, body)
    await audit.record(
        session,
        action="incident.create" if created else "incident.alert_repeated",
        actor=principal,
        resource_type="incident",
        resource_id=incident.id,
        details={
            "jira_id": service.jira_key(incident),
            "severity": incident.severity,
            "source": incident.alert_key,
        },
        origin=origin_of(request),
        team_id=incident.team_id,
    )
    if created:
        incident = await jira.file_issue(ctx, session, incident, principal)
    out = await service.output(session, incident)
    if not created:
        response.status_code = status.HTTP_200_OK
    _incident_event(request, "created" if created else "updated", out)
    return out


@router.get("/incidents/metrics", response_model=IncidentMetrics)
async def incident_metrics(
    principal: ReadIncidents,
    session: SessionDep,
    days: Annotated[int, Query(ge=1, le=3650)] = 30,
) -> IncidentMetrics:
    """MTTA and MTTR of the incidents opened in the last `days` days."""
    return await service.metrics(session, principal, days)


@router.get("/incidents/{incident_id}", response_model=IncidentOut, responses=responses(NotFound))
async def get_incident(
    incident_id: PathId, principal: ReadIncidents, session: SessionDep
) -> IncidentOut:
    return await service.output(
        session, await service.get_incident(session, principal, incident_id)
    )


@router.patch(
    "/incidents/{incident_id}",
    response_model=IncidentOut,
    responses=responses(NotFound, InvalidInput, Conflict),
)
async def update_incident(
    incident_id: PathId,
    body: IncidentUpdate,
    principal: WriteIncidents,
    session: SessionDep,
    request: Request,
) -> IncidentOut:
    """Fields, commander, participants and status (409 names the allowed next states)."""
    incident, changed = await service.update_incident(session, principal, incident_id, body)
    out = await service.output(session, incident)
    if changed:
        await audit.record(
            session,
            action="incident.update",
            actor=principal,
            resource_type="incident",
            resource_id=incident.id,
            details={"changed": changed, "status": incident.status},
            origin=origin_of(request),
            team_id=incident.team_id,
        )
        _incident_event(request, "updated", out)
    return out


@router.get(
    "/incidents/{incident_id}/timeline",
    response_model=Page[TimelineEntry],
    responses=responses(NotFound),
)
async def incident_timeline(
    incident_id: PathId, principal: ReadIncidents, session: SessionDep, paging: Paging
) -> Page[TimelineEntry]:
    """Every change, oldest first: who, when, what, the old and the new value."""
    await service.get_incident(session, principal, incident_id)
    rows, total = await paginate(session, service.timeline_query(incident_id), paging)
    return Page.of([service.timeline_out(r) for r in rows], total, paging)


# -- evidence ------------------------------------------------------------------------------
@router.get(
    "/incidents/{incident_id}/evidence",
    response_model=Page[EvidenceOut],
    responses=responses(NotFound),
)
async def list_evidence(
    incident_id: PathId,
    principal: ReadIncidents,
    session: SessionDep,
    ctx: Ctx,
    paging: Paging,
    request: Request,
) -> Page[EvidenceOut]:
    """Newest first; each item shown is a view in its custody log."""
    incident = await service.get_incident(session, principal, incident_id)
    rows, total = await paginate(session, ev.evidence_query(incident.id), paging)
    newer = await ev.superseded_by(session, rows)
    await release(session)
    ip = client_ip(request)
    await ev.record_custody(ctx.db, [ev.custody(r, principal, "viewed", ip) for r in rows])
    return Page.of([ev.evidence_out(r, newer) for r in rows], total, paging)


_EVIDENCE_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["title", "type"],
                    "properties": {
                        "title": {"type": "string", "minLength": 3, "maxLength": 200},
                        "type": {
                            "type": "string",
                            "enum": ["log", "screenshot", "document", "command", "note", "other"],
                        },
                        "content": {"type": "string", "description": "Text evidence"},
                        "file": {"type": "string", "format": "binary"},
                        "supersedes_id": {"type": "integer", "minimum": 1},
                    },
                }
            }
        },
    }
}


@router.post(
    "/incidents/{incident_id}/evidence",
    response_model=EvidenceOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_EVIDENCE_FORM,
    responses=responses(NotFound, InvalidInput, Conflict, PayloadTooLarge, UnsupportedMediaType),
)
async def add_evidence(
    incident_id: PathId,
    principal: WriteIncidents,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> EvidenceOut:
    """A file (streamed to storage, hashed on the way, type judged on its content, at most
    OPSCENTER_EVIDENCE_MAX_BYTES) or text `content`, with `title` and `type`. Immutable:
    to correct an item, add a new one with `supersedes_id`."""
    limit = ctx.settings.evidence_max_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + 2 * 1024 * 1024:
        raise PayloadTooLarge(f"Evidence files are limited to {limit} bytes")
    incident = await service.get_incident(session, principal, incident_id)
    if incident.status == IncidentStatus.CLOSED.value:
        raise Conflict(f"Incident {incident.id} is closed; it takes no more evidence")
    provider = await ev.default_storage(session, incident.team_id)
    storage = ctx.storages.get(provider)
    team_id = incident.team_id
    await release(session)  # the body streams into storage

    async def validate(form: Form) -> None:
        ev.parse_form(form)

    try:
        form = await receive(
            request.stream(),
            request.headers.get("content-type", ""),
            open_writer=lambda: storage.open_writer(ev.storage_key(incident_id)),
            max_file_bytes=limit,
            validate=validate,
        )
    except StorageError as err:
        raise Conflict(f"The evidence storage refused the file: {err.message}") from None
    data = ev.parse_form(form)
    try:
        incident = await service.get_incident(session, principal, incident_id)
        await ev.check_supersedes(session, incident, data.supersedes_id)
        item = ev.add_evidence(session, principal, incident, data, form, provider.id)
        await session.flush()
        session.add(
            ev.custody(item, principal, "uploaded", client_ip(request), f"sha256 {item.sha256}")
        )
        await service.note(
            session, incident, principal, "evidence_added", f"#{item.id} {item.title}"
        )
        await audit.record(
            session,
            action="incident.evidence_add",
            actor=principal,
            resource_type="incident",
            resource_id=incident.id,
            details={
                "evidence_id": item.id,
                "sha256": item.sha256,
                "size_bytes": item.size_bytes,
                "supersedes_id": item.supersedes_id,
            },
            origin=origin_of(request),
            team_id=team_id,
        )
        await session.flush()
    except BaseException:
        if form.file is not None:
            await session.rollback()
            await storage.delete(form.file.key)  # no object without its row
        raise
    _incident_event(request, "updated", await service.output(session, incident))
    return ev.evidence_out(item, {})


async def _evidence(
    session: SessionDep, principal: Principal, incident_id: int, evidence_id: int
) -> tuple[Incident, Evidence]:
    incident = await service.get_incident(session, principal, incident_id)
    return incident, await ev.get_evidence(session, incident, evidence_id)


@router.get(
    "/incidents/{incident_id}/evidence/{evidence_id}",
    response_model=EvidenceOut,
    responses=responses(NotFound),
)
async def get_evidence(
    incident_id: PathId,
    evidence_id: PathId,
    principal: ReadIncidents,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> EvidenceOut:
    _, item = await _evidence(session, principal, incident_id, evidence_id)
    newer = await ev.superseded_by(session, [item])
    await release(session)
    await ev.record_custody(ctx.db, [ev.custody(item, principal, "viewed", client_ip(request))])
    return ev.evidence_out(item, newer)


@router.get(
    "/incidents/{incident_id}/evidence/{evidence_id}/download",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        **responses(NotFound, ev.Tampered),
    },
)
async def download_evidence(
    incident_id: PathId,
    evidence_id: PathId,
    principal: ReadIncidents,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> Response:
    """The file, after its SHA-256 is re-checked: a file that no longer matches what was
    uploaded is refused (409 EVIDENCE_TAMPERED) and the refusal is in the custody log."""
    _, item = await _evidence(session, principal, incident_id, evidence_id)
    if item.storage_key is None or item.storage_id is None:
        raise NotFound("Evidence file", evidence_id)
    provider = await session.get(StorageProvider, item.storage_id)
    if provider is None:
        raise NotFound("Evidence storage", item.storage_id)
    storage = ctx.storages.get(provider)
    await release(session)
    ip = client_ip(request)
    try:
        digest, size = await ev.stored_digest(storage, item.storage_key)
    except StorageError as err:
        digest, size = f"unreadable ({err.code})", -1
    if digest != item.sha256 or size != item.size_bytes:
        detail = f"stored sha256 {digest}, size {size}; expected {item.sha256}, {item.size_bytes}"
        await ev.record_custody(
            ctx.db, [ev.custody(item, principal, "download_refused", ip, detail[:500])]
        )
        refusal = ev.Tampered(
            f"Evidence {item.id} no longer matches its SHA-256 {item.sha256}: the stored file "
            "was changed or lost. It is not served; report this to your security team."
        )
        return JSONResponse(
            {"detail": refusal.detail, "code": refusal.code, "timestamp": isoformat_z(utcnow())},
            status_code=refusal.status_code,
        )
    await ev.record_custody(
        ctx.db, [ev.custody(item, principal, "downloaded", ip, f"sha256 {digest}")]
    )
    safe_name = (item.file_name or f"evidence-{item.id}").replace('"', "'")
    return StreamingResponse(
        ev.stream_checked(storage, item.storage_key, item.sha256),
        media_type=item.media_type,
        headers={
            "Content-Length": str(item.size_bytes),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(safe_name, safe='')}",
            "X-Checksum-SHA256": item.sha256,
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get(
    "/incidents/{incident_id}/evidence/{evidence_id}/custody",
    response_model=Page[CustodyEntry],
    responses=responses(NotFound),
)
async def evidence_custody(
    incident_id: PathId,
    evidence_id: PathId,
    principal: ReadIncidents,
    session: SessionDep,
    paging: Paging,
) -> Page[CustodyEntry]:
    """Who uploaded, viewed and downloaded this item, and when, oldest first."""
    _, item = await _evidence(session, principal, incident_id, evidence_id)
    rows, total = await paginate(session, ev.custody_query(item.id), paging)
    return Page.of([CustodyEntry.model_validate(r) for r in rows], total, paging)


# -- tasks and SLA -------------------------------------------------------------------------
@router.get("/tasks", response_model=Page[TaskOut])
async def list_tasks(
    principal: ReadTasks,
    session: SessionDep,
    paging: Paging,
    incident_id: QueryId = None,
    squad: SquadQuery = None,
    status: TaskStatus | None = None,
    assignee_id: QueryId = None,
) -> Page[TaskOut]:
    filters = tasks.TaskFilters(incident_id, squad, status and status.value, assignee_id)
    rows, total = await paginate(session, tasks.tasks_query(principal, filters), paging)
    return Page.of(await tasks.outputs(session, rows), total, paging)


@router.post(
    "/tasks",
    response_model=TaskOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden, InvalidInput, NotFound),
)
async def create_task(
    body: TaskCreate, principal: WriteTasks, session: SessionDep, request: Request
) -> TaskOut:
    task, incident = await tasks.create_task(session, principal, body)
    out = (await tasks.outputs(session, [task]))[0]
    await _audit_task(session, principal, request, task, "task.create", {"title": task.title})
    _task_event(request, "created", out)
    if incident is not None:
        _incident_event(request, "updated", await service.output(session, incident))
    return out


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=responses(NotFound))
async def get_task(task_id: PathId, principal: ReadTasks, session: SessionDep) -> TaskOut:
    return (await tasks.outputs(session, [await tasks.get_task(session, principal, task_id)]))[0]


@router.patch(
    "/tasks/{task_id}", response_model=TaskOut, responses=responses(NotFound, InvalidInput)
)
async def update_task(
    task_id: PathId,
    body: TaskUpdate,
    principal: WriteTasks,
    session: SessionDep,
    request: Request,
) -> TaskOut:
    task, changes = await tasks.update_task(session, principal, task_id, body)
    out = (await tasks.outputs(session, [task]))[0]
    if changes:
        details: dict[str, Any] = {k: [str(o), str(n)] for k, (o, n) in changes.items()}
        await _audit_task(session, principal, request, task, "task.update", details)
        _task_event(request, "updated", out)
    return out


async def _audit_task(
    session: SessionDep,
    principal: Principal,
    request: Request,
    task: Task,
    action: str,
    details: dict[str, Any],
) -> None:
    await audit.record(
        session,
        action=action,
        actor=principal,
        resource_type="task",
        resource_id=task.id,
        details=details,
        origin=origin_of(request),
        team_id=task.team_id,
    )


@router.get("/sla-metrics", response_model=SlaMetrics)
async def sla_metrics(
    principal: ReadTasks,
    session: SessionDep,
    weeks: Annotated[int, Query(ge=1, le=52)] = 12,
    squad: SquadQuery = None,
) -> SlaMetrics:
    """Per week (Monday to Sunday, newest first): hours requested by the tasks created in
    it, hours delivered by those done, `sla_percentage` (100 when nothing was requested);
    with a forecast of the next weeks and its method."""
    rows = await tasks.sla_weeks(session, principal, weeks, squad)
    return SlaMetrics(
        items=rows,
        total=len(rows),
        limit=weeks,
        offset=0,
        forecast=tasks.forecast(rows),
        forecast_method=tasks.FORECAST_METHOD,
    )

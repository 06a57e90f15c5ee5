"""The AI model registry (seed 002): `/ai-models/` models, `/prompts`, `/fallback-config`,
`/{id}/metrics`, plus `/run` and `/calls`, the explanation of a failed backup and the
summary of an incident's timeline."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status

from opscenter.ai_models import explain, gateway, service, summarize
from opscenter.ai_models.schemas import (
    CallOut,
    Explanation,
    FallbackConfigOut,
    FallbackConfigUpdate,
    IncidentSummary,
    LabelsUpdate,
    Metrics,
    ModelCreate,
    ModelOut,
    ModelUpdate,
    PromptCreate,
    PromptOut,
    Rendered,
    RenderRequest,
    RunOut,
    RunRequest,
)
from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.clock import utcnow
from opscenter.core.context import AppContext, Ctx, SessionDep, publish_after_commit
from opscenter.core.errors import Conflict, Forbidden, InvalidInput, NotFound, responses
from opscenter.core.events import Event
from opscenter.core.pagination import Page, Paging, PathId, QueryId, paginate
from opscenter.core.principal import Principal

router = APIRouter(prefix="/ai-models", tags=["AI models"])
ReadModels = Annotated[Principal, Depends(require("read:ai_models"))]
WriteModels = Annotated[Principal, Depends(require("write:ai_models"))]
CALL_ERRORS = (
    Forbidden,
    NotFound,
    InvalidInput,
    service.NotConfigured,
    service.BudgetExceeded,
    service.AllModelsFailed,
)


def _services(ctx: AppContext) -> gateway.Services:
    return gateway.Services(ctx.db, ctx.keyring, ctx.outbound, ctx.events)


def _publish_after_commit(request: Request, type_: str, data: dict[str, Any], team_id: int) -> None:
    publish_after_commit(request, Event(f"ai_models.{type_}", data, team_id=team_id))


# -- models -------------------------------------------------------------------------------
@router.get("/", response_model=Page[ModelOut])
@router.get("", response_model=Page[ModelOut], include_in_schema=False)
async def list_models(principal: ReadModels, session: SessionDep, paging: Paging) -> Page[ModelOut]:
    rows, total = await paginate(session, service.models_query(principal), paging)
    return Page.of([service.model_out(m) for m in rows], total, paging)


@router.post(
    "/",
    response_model=ModelOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden, NotFound, Conflict, InvalidInput),
)
@router.post(
    "",
    response_model=ModelOut,
    status_code=status.HTTP_201_CREATED,
    include_in_schema=False,
)
async def create_model(
    body: ModelCreate, principal: WriteModels, session: SessionDep, ctx: Ctx, request: Request
) -> ModelOut:
    """Register a model. The API key is stored encrypted and never shown again; an
    endpoint inside the network is refused unless an admin allow-listed it."""
    model = await service.create_model(session, ctx.keyring, ctx.outbound, principal, body)
    await audit.record(
        session,
        action="ai_model.create",
        actor=principal,
        resource_type="ai_model",
        resource_id=model.id,
        team_id=model.team_id,
        details={"name": model.name, "provider": model.provider, "model": model.model},
        origin=origin_of(request),
    )
    _publish_after_commit(
        request, "model_created", {"model_id": model.id, "name": model.name}, model.team_id
    )
    return service.model_out(model)


# -- prompts ------------------------------------------------------------------------------
@router.get("/prompts", response_model=Page[PromptOut])
async def list_prompts(
    principal: ReadModels,
    session: SessionDep,
    paging: Paging,
    name: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[PromptOut]:
    """Every version, newest first within a name."""
    rows, total = await paginate(session, service.prompts_query(principal, name), paging)
    return Page.of([service.prompt_out(p) for p in rows], total, paging)


@router.post(
    "/prompts",
    response_model=PromptOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden, NotFound, InvalidInput),
)
async def create_prompt(
    body: PromptCreate, principal: WriteModels, session: SessionDep, request: Request
) -> PromptOut:
    """A new immutable version of the named prompt; its labels move here."""
    prompt = await service.create_prompt(session, principal, body)
    await audit.record(
        session,
        action="ai_prompt.create",
        actor=principal,
        resource_type="ai_prompt",
        resource_id=prompt.id,
        team_id=prompt.team_id,
        details={"name": prompt.name, "version": prompt.version, "labels": prompt.labels},
        origin=origin_of(request),
    )
    _publish_after_commit(
        request,
        "prompt_created",
        {"prompt_id": prompt.id, "name": prompt.name, "version": prompt.version},
        prompt.team_id,
    )
    return service.prompt_out(prompt)


@router.put(
    "/prompts/{prompt_id}/labels",
    response_model=PromptOut,
    responses=responses(Forbidden, NotFound),
)
async def set_labels(
    prompt_id: PathId,
    body: LabelsUpdate,
    principal: WriteModels,
    session: SessionDep,
    request: Request,
) -> PromptOut:
    """Give this version these labels (taking them off the name's other versions)."""
    prompt = await service.set_labels(session, principal, prompt_id, body.labels)
    await audit.record(
        session,
        action="ai_prompt.labels",
        actor=principal,
        resource_type="ai_prompt",
        resource_id=prompt.id,
        team_id=prompt.team_id,
        details={"name": prompt.name, "version": prompt.version, "labels": prompt.labels},
        origin=origin_of(request),
    )
    _publish_after_commit(
        request,
        "labels_moved",
        {"prompt_id": prompt.id, "name": prompt.name, "labels": prompt.labels},
        prompt.team_id,
    )
    return service.prompt_out(prompt)


@router.post(
    "/prompts/render", response_model=Rendered, responses=responses(NotFound, InvalidInput)
)
async def render_prompt(
    body: RenderRequest, principal: ReadModels, session: SessionDep
) -> Rendered:
    """The messages a prompt version gives with these variables (nothing is sent)."""
    team_id = service.team_of(principal, body.team_id)
    prompt = await service.resolve_prompt(session, team_id, body.name, body.label, body.version)
    messages = service.render(
        prompt.name, prompt.version, prompt.system, prompt.template, body.variables
    )
    return Rendered(
        prompt_id=prompt.id, name=prompt.name, version=prompt.version, messages=messages
    )


# -- fallback chains and budget -----------------------------------------------------------
@router.get("/fallback-config", response_model=FallbackConfigOut, responses=responses(NotFound))
async def get_fallback_config(
    principal: ReadModels, session: SessionDep, team_id: QueryId = None
) -> FallbackConfigOut:
    team = service.team_of(principal, team_id)
    config = await service.get_config(session, team)
    return await service.config_out(session, team, config, utcnow())


@router.put(
    "/fallback-config",
    response_model=FallbackConfigOut,
    responses=responses(Forbidden, NotFound, InvalidInput),
)
async def put_fallback_config(
    body: FallbackConfigUpdate,
    principal: WriteModels,
    session: SessionDep,
    request: Request,
) -> FallbackConfigOut:
    """Replace the team's chains (ordered models per purpose, retries with doubling
    backoff, cooldown of a failed model) and its budget per period."""
    config = await service.put_config(session, principal, body)
    await audit.record(
        session,
        action="ai_fallback_config.update",
        actor=principal,
        resource_type="ai_fallback_config",
        resource_id=config.id,
        team_id=config.team_id,
        details={
            "chains": config.chains,
            "budget_usd": config.budget_usd,
            "budget_period": config.budget_period,
        },
        origin=origin_of(request),
    )
    _publish_after_commit(request, "fallback_updated", {"config_id": config.id}, config.team_id)
    return await service.config_out(session, config.team_id, config, utcnow())


# -- calls --------------------------------------------------------------------------------
@router.post("/run", response_model=RunOut, responses=responses(*CALL_ERRORS))
async def run_prompt(
    body: RunRequest, principal: WriteModels, session: SessionDep, ctx: Ctx, request: Request
) -> RunOut:
    """Render a prompt version and send it through the purpose's fallback chain. Every
    attempt is measured and recorded, also when all of them fail (503)."""
    team_id = service.team_of(principal, body.team_id)
    prompt = await service.resolve_prompt(session, team_id, body.prompt, body.label, body.version)
    messages = service.render(
        prompt.name, prompt.version, prompt.system, prompt.template, body.variables
    )
    answer = await gateway.run(
        _services(ctx),
        session,
        team_id=team_id,
        purpose=body.purpose,
        messages=messages,
        user_id=principal.user_id,
    )
    await audit.record(
        session,
        action="ai_model.run",
        actor=principal,
        resource_type="ai_model",
        resource_id=answer.model_id,
        team_id=team_id,
        details={
            "prompt": prompt.name,
            "version": prompt.version,
            "purpose": body.purpose,
            "request_id": answer.request_id,
            "cost_usd": answer.cost_usd,
        },
        origin=origin_of(request),
    )
    return answer


@router.get("/calls", response_model=Page[CallOut])
async def list_calls(
    principal: ReadModels,
    session: SessionDep,
    paging: Paging,
    model_id: QueryId = None,
    request_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> Page[CallOut]:
    """Every attempt made through the registry, newest first."""
    stmt = service.calls_query(principal, model_id, request_id)
    rows, total = await paginate(session, stmt, paging)
    return Page.of([service.call_out(c) for c in rows], total, paging)


@router.post(
    "/explain/backup/{backup_id}",
    response_model=Explanation,
    responses=responses(*CALL_ERRORS, Conflict),
)
async def explain_backup(
    backup_id: PathId, principal: WriteModels, session: SessionDep, ctx: Ctx, request: Request
) -> Explanation:
    """Ask the team's models why a backup failed (chain `backup_explanation`, else
    `default`); the answer names the model that gave it."""
    if not principal.can("read:backups"):
        raise Forbidden("Explaining a backup needs read:backups")
    result = await explain.explain_backup(_services(ctx), session, principal, backup_id)
    await audit.record(
        session,
        action="ai_model.explain_backup",
        actor=principal,
        resource_type="backup",
        resource_id=backup_id,
        details={"model_id": result.model_id, "request_id": result.request_id},
        origin=origin_of(request),
    )
    return result


@router.post(
    "/summarize/incident/{incident_id}",
    response_model=IncidentSummary,
    responses=responses(*CALL_ERRORS),
)
async def summarize_incident(
    incident_id: PathId, principal: WriteModels, session: SessionDep, ctx: Ctx, request: Request
) -> IncidentSummary:
    """Ask the team's models to summarize an incident's timeline (chain `incident_summary`,
    else `default`); the answer names the model that gave it."""
    if not principal.can("read:incidents"):
        raise Forbidden("Summarizing an incident needs read:incidents")
    result = await summarize.summarize_incident(_services(ctx), session, principal, incident_id)
    await audit.record(
        session,
        action="ai_model.summarize_incident",
        actor=principal,
        resource_type="incident",
        resource_id=incident_id,
        team_id=result.team_id,
        details={
            "model_id": result.model_id,
            "request_id": result.request_id,
            "prompt_version": result.prompt_version,
            "cost_usd": result.cost_usd,
        },
        origin=origin_of(request),
    )
    return result


# -- one model ----------------------------------------------------------------------------
@router.get("/{model_id}", response_model=ModelOut, responses=responses(NotFound))
async def get_model(model_id: PathId, principal: ReadModels, session: SessionDep) -> ModelOut:
    return service.model_out(await service.get_model(session, principal, model_id))


@router.put(
    "/{model_id}",
    response_model=ModelOut,
    responses=responses(Forbidden, NotFound, Conflict, InvalidInput),
)
async def update_model(
    model_id: PathId,
    body: ModelUpdate,
    principal: WriteModels,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> ModelOut:
    """Fields left out keep their value; so does the API key unless a new one is given
    (or `clear_api_key`)."""
    model, changed = await service.update_model(
        session, ctx.keyring, ctx.outbound, principal, model_id, body
    )
    await audit.record(
        session,
        action="ai_model.update",
        actor=principal,
        resource_type="ai_model",
        resource_id=model.id,
        team_id=model.team_id,
        details={"changed": changed},
        origin=origin_of(request),
    )
    _publish_after_commit(
        request, "model_updated", {"model_id": model.id, "name": model.name}, model.team_id
    )
    return service.model_out(model)


@router.delete(
    "/{model_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(Forbidden, NotFound)
)
async def delete_model(
    model_id: PathId, principal: WriteModels, session: SessionDep, request: Request
) -> None:
    """The model's recorded calls stay (with its name); chains skip it from now on."""
    model = await service.get_model(session, principal, model_id)
    team_id, name = model.team_id, model.name
    await session.delete(model)
    await session.flush()
    await audit.record(
        session,
        action="ai_model.delete",
        actor=principal,
        resource_type="ai_model",
        resource_id=model_id,
        team_id=team_id,
        details={"name": name},
        origin=origin_of(request),
    )
    _publish_after_commit(request, "model_deleted", {"model_id": model_id}, team_id)


@router.get("/{model_id}/metrics", response_model=Metrics, responses=responses(NotFound))
async def model_metrics(
    model_id: PathId,
    principal: ReadModels,
    session: SessionDep,
    hours: Annotated[int, Query(ge=1, le=2160, description="The window, up to 90 days")] = 24,
) -> Metrics:
    """Latency, tokens, cost and outcomes of the calls sent to this model."""
    model = await service.get_model(session, principal, model_id)
    return await service.metrics(session, model, hours, utcnow())

"""Integrations and signed outgoing webhooks (seeds 000 and 002): `/integrations`.

Types: `webhook` (JSON signed per Standard Webhooks: `webhook-id`, `webhook-timestamp`,
`webhook-signature`; verify with any Standard Webhooks library and the `whsec_` secret
shown once at creation or rotation), `slack`, `teams`, `jira` (one issue per alert key,
commented on repeats, commented and optionally transitioned on recovery),
`github_actions`, `gitlab_ci`, `jenkins` (trigger a pipeline on the configured events).

Each integration's `config.events` lists event types or `prefix.*` patterns
(`backup.progress` and `job.progress` only when named exactly). Deliveries are retried after
5 s, 30 s, 2 min, 10 min and 1 h (`OPSCENTER_INTEGRATION_RETRY_SCHEDULE`); after 20
failed attempts in a row (`OPSCENTER_INTEGRATION_DISABLE_AFTER`) the integration is
disabled and `integration.disabled` is published. Every URL passes the outbound address
policy when saved and again at each send; redirects are not followed (a 3xx is a failure).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from opscenter.audit import service as audit
from opscenter.auth.deps import origin_of, require
from opscenter.core.context import Ctx, SessionDep
from opscenter.core.errors import Conflict, InvalidInput, NotFound, responses
from opscenter.core.pagination import (
    CursorPaging,
    KeysetPage,
    Page,
    Paging,
    PathId,
    keyset_page,
    paginate,
)
from opscenter.core.principal import Principal
from opscenter.integrations import service
from opscenter.integrations.delivery import probe
from opscenter.integrations.schemas import (
    DeliveryOut,
    HealthOut,
    IntegrationCreate,
    IntegrationCreated,
    IntegrationOut,
    IntegrationUpdate,
    ProbeResult,
    SigningSecret,
    Subscription,
    SyncResult,
)
from opscenter.integrations.transport import OutboundClient
from opscenter.models import WebhookDelivery

router = APIRouter(prefix="/integrations", tags=["Integrations"])
ReadIntegrations = Annotated[Principal, Depends(require("read:integrations"))]
WriteIntegrations = Annotated[Principal, Depends(require("write:integrations"))]


@router.get("", response_model=Page[IntegrationOut])
async def list_integrations(
    _: ReadIntegrations, session: SessionDep, paging: Paging
) -> Page[IntegrationOut]:
    rows, total = await paginate(session, service.integrations_query(), paging)
    return Page.of([service.integration_out(i) for i in rows], total, paging)


@router.post(
    "",
    response_model=IntegrationCreated,
    status_code=status.HTTP_201_CREATED,
    responses=responses(Conflict, InvalidInput),
)
async def create_integration(
    body: IntegrationCreate,
    principal: WriteIntegrations,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> IntegrationCreated:
    """A `webhook`'s signing secret is in this response only."""
    integration, secret = await service.create_integration(
        session, ctx.keyring, ctx.outbound, principal, body
    )
    await audit.record(
        session,
        action="integration.create",
        actor=principal,
        resource_type="integration",
        resource_id=integration.id,
        details={"name": integration.name, "type": integration.type, "events": integration.events},
        origin=origin_of(request),
    )
    out = service.integration_out(integration)
    return IntegrationCreated(**out.model_dump(), signing_secret=secret)


@router.get("/{integration_id}", response_model=IntegrationOut, responses=responses(NotFound))
async def get_integration(
    integration_id: PathId, _: ReadIntegrations, session: SessionDep
) -> IntegrationOut:
    return service.integration_out(await service.get_integration(session, integration_id))


@router.patch(
    "/{integration_id}",
    response_model=IntegrationOut,
    responses=responses(NotFound, Conflict, InvalidInput),
)
@router.put(  # seed 002's verb: the same partial body and meaning as PATCH
    "/{integration_id}",
    response_model=IntegrationOut,
    responses=responses(NotFound, Conflict, InvalidInput),
)
async def update_integration(
    integration_id: PathId,
    body: IntegrationUpdate,
    principal: WriteIntegrations,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> IntegrationOut:
    integration, changed = await service.update_integration(
        session, ctx.keyring, ctx.outbound, integration_id, body
    )
    await audit.record(
        session,
        action="integration.update",
        actor=principal,
        resource_type="integration",
        resource_id=integration.id,
        details={"changed": changed},
        origin=origin_of(request),
    )
    return service.integration_out(integration)


@router.delete(
    "/{integration_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(NotFound)
)
async def delete_integration(
    integration_id: PathId, principal: WriteIntegrations, session: SessionDep, request: Request
) -> None:
    integration = await service.delete_integration(session, integration_id)
    await audit.record(
        session,
        action="integration.delete",
        actor=principal,
        resource_type="integration",
        resource_id=integration_id,
        details={"name": integration.name, "type": integration.type},
        origin=origin_of(request),
    )


@router.post(
    "/{integration_id}/rotate-secret",
    response_model=SigningSecret,
    responses=responses(NotFound, Conflict),
)
async def rotate_signing_secret(
    integration_id: PathId,
    principal: WriteIntegrations,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> SigningSecret:
    """A new `whsec_` secret, in this response only; the old one stops signing at once."""
    integration, secret = await service.rotate_signing_secret(session, ctx.keyring, integration_id)
    await audit.record(
        session,
        action="integration.rotate_secret",
        actor=principal,
        resource_type="integration",
        resource_id=integration.id,
        origin=origin_of(request),
    )
    return SigningSecret(id=integration.id, signing_secret=secret)


@router.get(
    "/{integration_id}/webhooks", response_model=Page[Subscription], responses=responses(NotFound)
)
async def list_subscriptions(
    integration_id: PathId, _: ReadIntegrations, session: SessionDep, paging: Paging
) -> Page[Subscription]:
    """The event types (and `prefix.*` patterns) this integration delivers."""
    integration = await service.get_integration(session, integration_id)
    events = integration.events[paging.offset : paging.offset + paging.limit]
    return Page.of([Subscription(event_type=e) for e in events], len(integration.events), paging)


@router.get("/{integration_id}/health", response_model=HealthOut, responses=responses(NotFound))
async def integration_health(
    integration_id: PathId, principal: ReadIntegrations, session: SessionDep
) -> HealthOut:
    """State, error rate and latency over the latest deliveries, and the last ten."""
    return await service.health(session, integration_id, principal)


@router.get(
    "/{integration_id}/deliveries",
    response_model=KeysetPage[DeliveryOut],
    responses=responses(NotFound),
)
async def list_deliveries(
    integration_id: PathId, principal: ReadIntegrations, session: SessionDep, paging: CursorPaging
) -> KeysetPage[DeliveryOut]:
    await service.get_integration(session, integration_id)
    stmt = service.deliveries_query(integration_id, principal)
    rows, total, next_cursor = await keyset_page(session, stmt, paging, WebhookDelivery.id)
    return KeysetPage.keyset([service.delivery_out(d) for d in rows], total, paging, next_cursor)


@router.post(
    "/{integration_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, Conflict),
)
async def redeliver(
    integration_id: PathId,
    delivery_id: PathId,
    principal: WriteIntegrations,
    session: SessionDep,
    request: Request,
) -> DeliveryOut:
    """Queues the same message again (same `webhook-id`) as a new delivery."""
    delivery = await service.redeliver(session, integration_id, delivery_id, principal)
    await audit.record(
        session,
        action="integration.redeliver",
        actor=principal,
        resource_type="integration",
        resource_id=integration_id,
        details={"delivery_id": delivery_id, "new_delivery_id": delivery.id},
        origin=origin_of(request),
    )
    return service.delivery_out(delivery)


@router.post(
    "/{integration_id}/test",
    response_model=ProbeResult,
    responses=responses(NotFound),
)
async def test_integration(
    integration_id: PathId,
    principal: WriteIntegrations,
    session: SessionDep,
    ctx: Ctx,
    request: Request,
) -> ProbeResult:
    """Sends one real request now (an `integration.test` event; Jira: who-am-I) and says
    how it went. Logged as a delivery; not retried, and not counted toward disabling."""
    http = OutboundClient(ctx.outbound, ctx.settings.integration_timeout_seconds)
    try:
        delivery, result = await probe(session, ctx.keyring, http, integration_id)
    finally:
        await http.close()
    await audit.record(
        session,
        action="integration.test",
        actor=principal,
        resource_type="integration",
        resource_id=integration_id,
        details={"success": result.ok, "status_code": result.status_code},
        origin=origin_of(request),
    )
    return ProbeResult(
        success=result.ok,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
        delivery_id=delivery.id,
    )


@router.post(
    "/{integration_id}/sync",
    response_model=SyncResult,
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(NotFound, Conflict),
)
async def sync_integration(
    integration_id: PathId, principal: WriteIntegrations, session: SessionDep, request: Request
) -> SyncResult:
    """Deliveries waiting for a retry are sent now; those that gave up are queued again."""
    integration, queued = await service.requeue(session, integration_id)
    await audit.record(
        session,
        action="integration.sync",
        actor=principal,
        resource_type="integration",
        resource_id=integration.id,
        details={"queued": queued},
        origin=origin_of(request),
    )
    return SyncResult(id=integration.id, status="queued", queued=queued)

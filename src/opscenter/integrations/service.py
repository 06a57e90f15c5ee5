"""Integrations: validated configuration, secrets sealed at rest, the delivery log."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import utcnow
from opscenter.core.errors import Conflict, InvalidInput, NotFound
from opscenter.core.outbound import OutboundPolicy
from opscenter.core.principal import Principal
from opscenter.core.security import Keyring
from opscenter.integrations.providers import PROVIDERS, Message, Provider
from opscenter.integrations.schemas import (
    Attempt,
    DeliveryOut,
    HealthOut,
    IntegrationCreate,
    IntegrationOut,
    IntegrationUpdate,
)
from opscenter.models import Integration, WebhookDelivery

HEALTH_WINDOW = 100
TERMINAL = ("succeeded", "failed")


def integration_out(integration: Integration) -> IntegrationOut:
    return IntegrationOut(
        id=integration.id,
        name=integration.name,
        type=integration.type,
        config=integration.config,
        events=integration.events,
        credential_fields=integration.secret_fields,
        has_signing_secret=integration.signing_secret_encrypted is not None,
        is_active=integration.is_active,
        disabled_reason=integration.disabled_reason,
        consecutive_failures=integration.consecutive_failures,
        last_success_at=integration.last_success_at,
        last_failure_at=integration.last_failure_at,
        created_at=integration.created_at,
        updated_at=integration.updated_at,
    )


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        integration_id=delivery.integration_id,
        message_id=delivery.message_id,
        event_type=delivery.event_type,
        payload=delivery.payload,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        last_latency_ms=delivery.last_latency_ms,
        delivered_at=delivery.delivered_at,
        redelivery_of=delivery.redelivery_of,
        attempts_log=[Attempt.model_validate(a) for a in delivery.attempts_log],
        created_at=delivery.created_at,
    )


# -- secrets -----------------------------------------------------------------------------
def _credentials_context(integration_id: int) -> str:
    return f"integrations.secrets:{integration_id}"


def _signing_context(integration_id: int) -> str:
    return f"integrations.signing_secret:{integration_id}"


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def store_credentials(keyring: Keyring, integration: Integration, values: dict[str, str]) -> None:
    integration.secret_fields = sorted(values)
    integration.secrets_encrypted = (
        keyring.encrypt_secret(json.dumps(values), context=_credentials_context(integration.id))
        if values
        else None
    )


def credentials_of(keyring: Keyring, integration: Integration) -> dict[str, str]:
    if not integration.secrets_encrypted:
        return {}
    data: dict[str, str] = json.loads(
        keyring.decrypt_secret(
            integration.secrets_encrypted, context=_credentials_context(integration.id)
        )
    )
    return data


def signing_secret_of(keyring: Keyring, integration: Integration) -> str | None:
    if not integration.signing_secret_encrypted:
        return None
    return keyring.decrypt_secret(
        integration.signing_secret_encrypted, context=_signing_context(integration.id)
    )


def message_for(keyring: Keyring, integration: Integration, delivery: WebhookDelivery) -> Message:
    return Message(
        message_id=delivery.message_id,
        event_type=delivery.event_type,
        payload=delivery.payload,
        config=integration.config,
        credentials=credentials_of(keyring, integration),
        signing_secret=signing_secret_of(keyring, integration),
        state=json.loads(json.dumps(integration.state or {})),  # a copy, saved on success
    )


# -- validation --------------------------------------------------------------------------
def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


async def validated(
    provider: Provider,
    config: dict[str, Any],
    credentials: dict[str, str],
    policy: OutboundPolicy,
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(config without events, events, credentials); every URL passes the address policy."""
    try:
        checked = provider.config_model.model_validate(config).model_dump()
    except ValidationError as err:
        raise InvalidInput(f"Invalid {provider.name} config: {_first_error(err)}") from None
    model = provider.credentials_model
    if model is None:
        if credentials:
            raise InvalidInput(f"A {provider.name} integration takes no credentials")
        secrets: dict[str, str] = {}
    else:
        try:
            secrets = {k: v for k, v in model.model_validate(credentials).model_dump().items() if v}
        except ValidationError as err:
            raise InvalidInput(
                f"Invalid {provider.name} credentials: {_first_error(err)}"
            ) from None
    for url in provider.urls(checked, secrets):
        # Blocking DNS runs off the loop; the answer is checked again at every send.
        await asyncio.to_thread(policy.check_url, url)
    events = sorted(set(checked.pop("events")))
    return checked, events, secrets


# -- CRUD --------------------------------------------------------------------------------
def integrations_query() -> Select[Any]:
    return select(Integration).order_by(Integration.id.desc())


async def get_integration(session: AsyncSession, integration_id: int) -> Integration:
    integration = await session.get(Integration, integration_id)
    if integration is None:
        raise NotFound("Integration", integration_id)
    return integration


async def _ensure_unique_name(
    session: AsyncSession, name: str, exclude_id: int | None = None
) -> None:
    stmt = select(Integration.id).where(Integration.name == name)
    if exclude_id is not None:
        stmt = stmt.where(Integration.id != exclude_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(f"An integration named {name!r} exists already")


async def create_integration(
    session: AsyncSession,
    keyring: Keyring,
    policy: OutboundPolicy,
    actor: Principal,
    data: IntegrationCreate,
) -> tuple[Integration, str | None]:
    provider = PROVIDERS[data.type.value]
    config, events, secrets = await validated(provider, data.config, data.credentials or {}, policy)
    await _ensure_unique_name(session, data.name)
    integration = Integration(
        name=data.name,
        type=provider.name,
        config=config,
        events=events,
        secret_fields=[],
        state={},
        is_active=data.is_active,
        consecutive_failures=0,
        created_by=actor.user_id,
    )
    session.add(integration)
    try:
        await session.flush()  # the id is bound into the ciphertexts
    except IntegrityError:
        raise Conflict(f"An integration named {data.name!r} exists already") from None
    store_credentials(keyring, integration, secrets)
    signing_secret = None
    if provider.signed:
        signing_secret = new_signing_secret()
        integration.signing_secret_encrypted = keyring.encrypt_secret(
            signing_secret, context=_signing_context(integration.id)
        )
    await session.flush()
    return integration, signing_secret


async def update_integration(
    session: AsyncSession,
    keyring: Keyring,
    policy: OutboundPolicy,
    integration_id: int,
    data: IntegrationUpdate,
) -> tuple[Integration, list[str]]:
    """The changed field names come back for the audit trail (never their values)."""
    integration = await get_integration(session, integration_id)
    provider = PROVIDERS[integration.type]
    changed: list[str] = []
    if data.name is not None and data.name != integration.name:
        await _ensure_unique_name(session, data.name, exclude_id=integration.id)
        integration.name = data.name
        changed.append("name")
    if data.config is not None or data.credentials is not None:
        config = data.config
        if config is None:
            config = {**integration.config, "events": integration.events}
        secrets = (
            data.credentials
            if data.credentials is not None
            else credentials_of(keyring, integration)
        )
        checked, events, secrets = await validated(provider, config, secrets, policy)
        if data.config is not None:
            integration.config, integration.events = checked, events
            changed.append("config")
        if data.credentials is not None:
            store_credentials(keyring, integration, secrets)
            changed.append("credentials")
    if data.is_active is not None and data.is_active != integration.is_active:
        integration.is_active = data.is_active
        changed.append("is_active")
        if data.is_active:  # re-enabled by a person: start counting afresh
            integration.consecutive_failures = 0
            integration.disabled_reason = None
        else:
            integration.disabled_reason = "disabled by an admin"
    await session.flush()
    return integration, changed


async def delete_integration(session: AsyncSession, integration_id: int) -> Integration:
    integration = await get_integration(session, integration_id)
    await session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.integration_id == integration.id)
    )
    await session.delete(integration)
    await session.flush()
    return integration


async def rotate_signing_secret(
    session: AsyncSession, keyring: Keyring, integration_id: int
) -> tuple[Integration, str]:
    integration = await get_integration(session, integration_id)
    if not PROVIDERS[integration.type].signed:
        raise Conflict(f"A {integration.type} integration has no signing secret")
    secret = new_signing_secret()
    integration.signing_secret_encrypted = keyring.encrypt_secret(
        secret, context=_signing_context(integration.id)
    )
    await session.flush()
    return integration, secret


# -- deliveries --------------------------------------------------------------------------
def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def new_delivery(
    integration_id: int,
    event_type: str,
    payload: dict[str, Any],
    team_id: int | None,
    *,
    message_id: str | None = None,
    redelivery_of: int | None = None,
) -> WebhookDelivery:
    return WebhookDelivery(
        integration_id=integration_id,
        message_id=message_id or new_message_id(),
        team_id=team_id,
        event_type=event_type,
        payload=payload,
        status="pending",
        attempts=0,
        next_attempt_at=utcnow(),
        attempts_log=[],
        redelivery_of=redelivery_of,
    )


def deliveries_query(integration_id: int, principal: Principal) -> Select[Any]:
    """Deliveries carry event data: a caller sees those of their teams and team-less ones."""
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.integration_id == integration_id)
        .order_by(WebhookDelivery.id.desc())
    )
    if not principal.sees_all_teams:
        stmt = stmt.where(
            or_(
                WebhookDelivery.team_id.is_(None),
                WebhookDelivery.team_id.in_(principal.team_ids),
            )
        )
    return stmt


async def redeliver(
    session: AsyncSession, integration_id: int, delivery_id: int, principal: Principal
) -> WebhookDelivery:
    """A new delivery of the same message (same `webhook-id`, so receivers can dedupe)."""
    integration = await get_integration(session, integration_id)
    stmt = deliveries_query(integration.id, principal).where(WebhookDelivery.id == delivery_id)
    original = await session.scalar(stmt)
    if original is None:
        raise NotFound("Delivery", delivery_id)
    if not integration.is_active:
        raise Conflict("The integration is disabled: enable it first")
    if original.status not in TERMINAL:
        raise Conflict(f"Delivery {delivery_id} is still {original.status}")
    copy = new_delivery(
        integration.id,
        original.event_type,
        original.payload,
        original.team_id,
        message_id=original.message_id,
        redelivery_of=original.id,
    )
    session.add(copy)
    await session.flush()
    return copy


async def requeue(session: AsyncSession, integration_id: int) -> tuple[Integration, int]:
    """Sync: deliveries waiting for a retry go now, those that gave up are queued again."""
    integration = await get_integration(session, integration_id)
    if not integration.is_active:
        raise Conflict("The integration is disabled: enable it first")
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.integration_id == integration.id,
            WebhookDelivery.status.in_(("pending", "failed")),
        )
        .values(status="pending", next_attempt_at=utcnow(), attempts=0)
    )
    await session.flush()
    return integration, int(getattr(result, "rowcount", 0) or 0)


async def health(session: AsyncSession, integration_id: int, principal: Principal) -> HealthOut:
    integration = await get_integration(session, integration_id)
    recent = list(
        (
            await session.scalars(deliveries_query(integration.id, principal).limit(HEALTH_WINDOW))
        ).all()
    )
    counts = {status: sum(1 for d in recent if d.status == status) for status in TERMINAL}
    latencies = [d.last_latency_ms for d in recent if d.last_latency_ms is not None]
    finished = counts["succeeded"] + counts["failed"]
    return HealthOut(
        integration_id=integration.id,
        is_active=integration.is_active,
        disabled_reason=integration.disabled_reason,
        consecutive_failures=integration.consecutive_failures,
        last_success_at=integration.last_success_at,
        last_failure_at=integration.last_failure_at,
        window=len(recent),
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        pending=len(recent) - finished,
        error_rate=round(counts["failed"] / finished, 4) if finished else 0.0,
        average_latency_ms=round(sum(latencies) / len(latencies), 1) if latencies else None,
        recent=[delivery_out(d) for d in recent[:10]],
    )

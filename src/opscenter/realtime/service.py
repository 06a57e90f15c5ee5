"""What a WebSocket client receives: events it may see (team scope), on the channels it
subscribed to, in seed 001's shapes and seed 004's envelope at once."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from opscenter.core.events import Event
from opscenter.core.principal import Principal

CHANNEL = re.compile(r"^[a-z_]+(:[A-Za-z0-9_.-]{1,64})?$")
MAX_CHANNELS = 100

# The event's type prefix -> its channel, and the resource id that makes `channel:id`.
_CHANNELS = {
    "backup": ("backups", "backup_id"),
    "restore": ("backups", "backup_id"),
    "verification": ("backups", "backup_id"),
    "retention": ("backups", None),
    "schedule": ("schedules", "schedule_id"),
    "job": ("jobs", "job_id"),
    "server": ("servers", "server_id"),
    "notification": ("notifications", None),
    "incident": ("incidents", "incident_id"),
    "task": ("tasks", "task_id"),
    "asset": ("assets", "asset_id"),
    "command": ("commands", "execution_id"),
    "sop": ("sops", "run_id"),
    "resource_alert": ("resources", "alert_id"),
}
# Where the id channel is named after the area, not the id field (`command:<execution_id>`).
_ID_CHANNEL = {"command": "command", "sop": "sop"}


def visible(event: Event, principal: Principal) -> bool:
    if event.type.startswith("notification.") and "user_id" in event.data:
        return bool(event.data["user_id"] == principal.user_id)  # one user's own inbox
    if event.type.startswith("user."):
        return principal.can("read:users")  # accounts are news for user admins only
    return event.team_id is None or principal.sees_all_teams or event.team_id in principal.team_ids


def channels_of(event: Event) -> set[str]:
    """Every channel name that carries this event."""
    prefix = event.type.split(".", 1)[0]
    channel, id_field = _CHANNELS.get(prefix, (prefix, None))
    names = {channel}
    if event.data.get("kind") == "backup":  # a backup's job is news on `backups` too
        names.add("backups")
    for field in filter(None, (id_field, "backup_id", "job_id", "server_id")):
        if field in event.data:
            name = _ID_CHANNEL.get(prefix, "") if field == id_field else ""
            names.add(f"{name or field.removesuffix('_id')}:{event.data[field]}")
    if environment := event.data.get("environment"):
        names.add(str(environment))
    if squad := event.data.get("squad"):  # seed 004: incidents and tasks reach their squad
        names.add(f"squad:{squad}")
    return names


def message(event: Event) -> dict[str, Any]:
    """Seed 004's envelope (type, action, data, timestamp) plus seed 001's flat fields."""
    prefix, _, action = event.type.partition(".")
    body: dict[str, Any] = {
        "type": prefix,
        "action": action or prefix,
        "data": event.data,
        "timestamp": event.timestamp,
    }
    data = event.data
    if prefix == "job" and data.get("kind") == "backup" and "backup_id" in data:
        total, done = data.get("bytes_total"), data.get("bytes_done")
        progress = data.get("progress")
        if progress is None and total and done is not None:
            progress = round(100.0 * done / total, 1)
        body.update(
            type="backup_progress",
            backup_id=data["backup_id"],
            progress=progress,
            status=data.get("status", "in_progress"),
            bytes_done=done,
        )
    elif prefix == "server" and action == "health_changed":
        body.update(
            type="server_health",
            server_id=data.get("server_id"),
            health_status=data.get("health_status"),
        )
    elif prefix == "notification" and action == "created":
        body.update(
            type="notification",
            id=data.get("notification_id"),
            level=data.get("level"),
            message=data.get("message"),
            details=data.get("details", {}),
        )
    elif prefix == "backup" and action in ("failed", "interrupted"):
        body.update(
            type="notification",
            level="error",
            message=f"Backup {data.get('backup_id')} {action}: {data.get('error')}",
            details=data,
        )
    return body


@dataclass(frozen=True)
class Rendered:
    channels: frozenset[str]
    text: str  # the message as sent


# One event goes to every client of the process (a thousand of them): its channels and its
# text are worked out once, not once per client. Keyed by the event's identity, which
# cannot be reused while the entry holds the event; as many as a client's queue holds.
_RENDERED: dict[int, tuple[Event, Rendered]] = {}
RENDERED_KEPT = 256


def rendered(event: Event) -> Rendered:
    if (hit := _RENDERED.get(id(event))) is not None:
        return hit[1]
    out = Rendered(
        frozenset(channels_of(event)),
        json.dumps(message(event), separators=(",", ":"), ensure_ascii=False),
    )
    _RENDERED[id(event)] = (event, out)
    if len(_RENDERED) > RENDERED_KEPT:
        del _RENDERED[next(iter(_RENDERED))]  # the oldest
    return out

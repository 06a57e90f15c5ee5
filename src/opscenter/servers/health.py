"""The periodic health check: probe every server, keep `health_status` and
`last_heartbeat` current, and publish `server.health_changed` when the status flips."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from opscenter.core.context import AppContext
from opscenter.core.events import Event
from opscenter.core.logging import get_logger
from opscenter.models import Server
from opscenter.servers import connect, service

log = get_logger("opscenter.health")
PARALLEL_PROBES = 4


async def check_all(app: AppContext) -> int:
    """One round; returns how many servers changed status."""
    async with app.db.read_session() as session:
        server_ids = list((await session.scalars(select(Server.id).order_by(Server.id))).all())
    gate = asyncio.Semaphore(PARALLEL_PROBES)
    changed = await asyncio.gather(*(_check_one(app, sid, gate) for sid in server_ids))
    return sum(changed)


async def _check_one(app: AppContext, server_id: int, gate: asyncio.Semaphore) -> bool:
    async with gate:
        async with app.db.read_session() as session:
            server = await session.get(Server, server_id)
            if server is None:
                return False
            target = service.target_of(app.keyring, server)
        result = await connect.probe(target)
        async with app.db.write_session() as session:
            server = await session.get(Server, server_id)
            if server is None:
                return False
            flipped = await service.record_health(session, server, result)
            await session.commit()
        if flipped:
            app.events.publish(
                Event(
                    "server.health_changed",
                    {
                        "server_id": server.id,
                        "health_status": server.health_status,
                        "message": server.health_message,
                    },
                    team_id=server.team_id,
                )
            )
        return flipped


async def run_forever(app: AppContext, interval_seconds: float) -> None:
    while True:
        try:
            await check_all(app)
        except Exception:
            log.exception("health check round failed")
        await asyncio.sleep(interval_seconds)

"""Rows written straight into the database (the figures are hand-computed from them), and
a team with its own operator, so another test's rows never reach the figures."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from opscenter.models import Backup, Server, StorageProvider
from tests.conftest import Api, CreatedUser, UserFactory

BASE = "/api/v1/analytics"


@dataclass
class Team:
    id: int
    user: CreatedUser
    client: httpx.AsyncClient
    server_id: int
    storage_id: int


async def add(api: Api, *rows: Any) -> list[Any]:
    """Insert the rows in one transaction; they come back with their ids."""
    async with api.app.state.ctx.db.write_session() as session:
        session.add_all(rows)
        await session.flush()
        await session.commit()
    return list(rows)


async def own_team(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, role: str = "operator"
) -> Team:
    team = (
        await admin.post("/api/v1/users/teams", json={"name": f"an-{uuid.uuid4().hex[:8]}"})
    ).json()
    user = await make_user(role, team_ids=[team["id"]])
    server, storage = await add(
        api,
        Server(team_id=team["id"], name=f"db-{uuid.uuid4().hex[:6]}", type="local"),
        StorageProvider(
            team_id=team["id"],
            name=f"st-{uuid.uuid4().hex[:6]}",
            type="local",
            config={"path": tempfile.gettempdir()},  # a whole row, as the API writes them
        ),
    )
    return Team(team["id"], user, user.client(api), server.id, storage.id)


def backup(
    team: Team,
    database: str,
    created: datetime,
    status: str = "completed",
    *,
    size: int | None = None,
    duration: float | None = None,
    verification: str = "unverified",
    **fields: Any,
) -> Backup:
    done = status == "completed"
    return Backup(
        team_id=team.id,
        server_id=team.server_id,
        storage_id=team.storage_id,
        storage_key=f"k/{uuid.uuid4().hex}",
        database_name=database,
        db_type="postgresql",
        status=status,
        size_bytes=size,
        duration_seconds=duration,
        verification_status=verification,
        created_at=created,
        started_at=created,
        completed_at=created + timedelta(seconds=duration or 0) if done else None,
        **fields,
    )

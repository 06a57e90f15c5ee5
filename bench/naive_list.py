"""The yardstick of issue 23's list goal: "twice what a naive ORM + Pydantic route reaches
on this machine". A plain FastAPI app with one route, the filtered backup list as a first
draft would write it: ORM objects through a session per request, a Pydantic response
model, offset paging. No authentication, no middleware, no count: the route alone, so the
comparison is as hard on opscenter as it can be.

It runs in its own process, under the same uvicorn (uvloop, httptools, no access log), on
the database `bench/api.py` loaded, and is measured by the same wrk in the same run, so the
ratio holds whatever the host's speed that minute.

    .venv/bin/python bench/naive_list.py DATABASE_URL PORT
"""

import sys
from collections.abc import AsyncIterator
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from opscenter.backups.schemas import BackupOut
from opscenter.backups.service import backup_out
from opscenter.models import Backup


class BackupPage(BaseModel):
    items: list[BackupOut]
    limit: int
    offset: int


def create_app(database_url: str) -> FastAPI:
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    app = FastAPI()

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    @app.get("/backups", response_model=BackupPage)
    async def list_backups(
        db: Annotated[AsyncSession, Depends(session)],
        server_id: int | None = None,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> BackupPage:
        query = select(Backup).order_by(Backup.id.desc()).limit(limit).offset(offset)
        if server_id is not None:
            query = query.where(Backup.server_id == server_id)
        if status is not None:
            query = query.where(Backup.status == status)
        rows = (await db.scalars(query)).all()
        return BackupPage(items=[backup_out(b) for b in rows], limit=limit, offset=offset)

    return app


if __name__ == "__main__":
    url, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(create_app(url), host="127.0.0.1", port=port, log_level="warning", access_log=False)

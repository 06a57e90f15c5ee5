"""What the CLI's commands do, kept apart from argument parsing."""

from __future__ import annotations

from opscenter.audit import service as audit
from opscenter.bootstrap import bootstrap
from opscenter.config import get_settings
from opscenter.core.db import Database
from opscenter.core.principal import SYSTEM
from opscenter.users import service as users
from opscenter.users.schemas import UserCreate


async def _database() -> Database:
    settings = get_settings()
    db = Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout,
    )
    await bootstrap(settings, db)
    return db


async def create_user(username: str, email: str, role: str, full_name: str, password: str) -> int:
    db = await _database()
    try:
        data = UserCreate(
            username=username, email=email, role=role, full_name=full_name, password=password
        )
        async with db.write_session() as session:
            user = await users.create_user(session, SYSTEM, data)
            await audit.record(
                session,
                action="user.create",
                username="system (cli)",
                resource_type="user",
                resource_id=user.id,
                details={"username": user.username, "role": role},
            )
            await session.commit()
            return user.id
    finally:
        await db.dispose()


async def verify_audit() -> audit.ChainReport:
    db = await _database()
    try:
        async with db.read_session() as session:
            return await audit.verify_chain(session)
    finally:
        await db.dispose()

"""First start and every start: schema migrations, built-in roles, default team, admin."""

from __future__ import annotations

import asyncio
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select

from opscenter.config import Settings
from opscenter.core.db import AdvisoryLock, Database, advisory_xact_lock
from opscenter.core.security import hash_password
from opscenter.models import Role, User
from opscenter.servers import service as servers
from opscenter.storage import service as storage
from opscenter.users import service as users

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate(database_url: str) -> None:
    """Blocking; runs its own event loop (call it from a thread inside async code)."""
    command.upgrade(alembic_config(database_url), "head")


@dataclass(frozen=True)
class BootstrapResult:
    admin_created: bool
    generated_password: str | None


async def bootstrap(settings: Settings, db: Database) -> BootstrapResult:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(migrate, db.url)
    async with db.write_session() as session:
        # Processes starting together seed one at a time (one admin, one default team).
        await advisory_xact_lock(session, AdvisoryLock.STARTUP)
        await users.sync_builtin_roles(session)
        team = await users.ensure_default_team(session)
        await storage.ensure_default_provider(session, team.id, settings.data_dir)
        generated = None
        created = False
        if not await session.scalar(select(func.count(User.id))):
            password = settings.admin_password or secrets.token_urlsafe(18)
            generated = None if settings.admin_password else password
            admin_role = await session.scalar(select(Role).where(Role.name == "admin"))
            assert admin_role is not None
            session.add(
                User(
                    username="admin",
                    email=settings.admin_email.lower(),
                    full_name="Administrator",
                    password_hash=await asyncio.to_thread(hash_password, password),
                    role=admin_role,
                    teams=[team],
                )
            )
            servers.add_this_host(session, team.id)
            created = True
        await session.commit()
    return BootstrapResult(created, generated)


def announce(result: BootstrapResult) -> None:
    """The generated admin password is shown once, on the console, never in the logs."""
    if result.generated_password:
        print(
            "\n  opscenter: created user 'admin' with password:\n\n"
            f"      {result.generated_password}\n\n"
            "  It is shown only this once. Change it after logging in.\n",
            file=sys.stderr,
            flush=True,
        )

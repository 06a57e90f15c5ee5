"""Migrations: one head; up, down and up again on fresh SQLite and PostgreSQL databases;
and afterwards the schema is exactly what the models describe."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from opscenter.bootstrap import alembic_config
from opscenter.models import AuditLog, Base
from opscenter.models.base import is_mapped
from tests.core.helpers import BACKENDS, fresh_database


def test_exactly_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///unused.db"))
    heads = script.get_heads()
    assert len(heads) == 1, f"several heads, merge them: {heads}"
    # Every revision is reachable from the head, down to a single base.
    revisions = list(script.walk_revisions())
    assert len(script.get_bases()) == 1
    assert revisions[0].revision == heads[0] and revisions[-1].down_revision is None


def _diff(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": is_mapped}
    )
    return list(compare_metadata(context, Base.metadata))


async def _schema(url: str) -> tuple[set[str], list[Any], str | None]:
    """Tables, differences from the models, and the current revision."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            tables = {name for name in names if is_mapped(name, "table", {})}
            diff = await conn.run_sync(_diff) if "alembic_version" in tables else []
            revision = None
            if "alembic_version" in tables:
                revision = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            return tables - {"alembic_version"}, diff, revision
    finally:
        await engine.dispose()


async def _audit_update_refused(url: str) -> None:
    engine = create_async_engine(url)
    try:
        row = {"action": "probe", "outcome": "success", "details": {}, "prev_hash": "0" * 64}
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(AuditLog.__table__).values(
                    created_at=datetime.now(UTC), hash="1" * 64, **row
                )
            )
        for statement in ("UPDATE audit_logs SET action = 'x'", "DELETE FROM audit_logs"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_upgrade_downgrade_upgrade_matches_the_models(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        config = alembic_config(url)
        head = ScriptDirectory.from_config(config).get_current_head()
        # Alembic's env runs its own event loop: keep it off this test's loop.
        await asyncio.to_thread(command.upgrade, config, "head")
        tables, diff, revision = await _schema(url)
        assert revision == head
        assert tables == set(Base.metadata.tables), tables ^ set(Base.metadata.tables)
        assert diff == [], f"models and migrations disagree: {diff}"

        await asyncio.to_thread(command.downgrade, config, "base")
        tables, _, revision = await _schema(url)
        assert tables == set() and revision is None

        await asyncio.to_thread(command.upgrade, config, "head")
        tables, diff, revision = await _schema(url)
        assert revision == head and diff == []
        assert tables == set(Base.metadata.tables)
        # The append-only protection of the audit trail came back with the schema.
        await _audit_update_refused(url)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_finops_tag_sets_keep_the_lines_tags(backend: str, tmp_path: Path) -> None:
    """0039 moves each import's distinct tags into numbered sets and back on downgrade."""
    with fresh_database(backend, tmp_path) as url:
        config = alembic_config(url)
        await asyncio.to_thread(command.upgrade, config, "0038")
        now = datetime.now(UTC)
        engine = create_async_engine(url)
        line = (
            "INSERT INTO cost_lines (import_id, team_id, billing_period_start,"
            " charge_period_start, charge_period_end, charge_day, charge_category, provider,"
            " service, billed_cost, effective_cost, currency, tags) VALUES (1, 1, '2026-10-01',"
            " :t, :t, '2026-10-02', 'Usage', 'AWS', 'S3', 1, 1, 'USD', :tags)"
        )
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO teams (id, name, description, created_at, updated_at)"
                        " VALUES (1, 't', '', :t, :t)"
                    ),
                    {"t": now},
                )
                await conn.execute(
                    sa.text(
                        "INSERT INTO cost_imports (id, team_id, filename, format, sha256,"
                        " size_bytes, status, rows_total, rows_imported, rows_rejected,"
                        " rejected, created_at, updated_at) VALUES (1, 1, 'f', 'focus', 'x', 1,"
                        " 'completed', 3, 3, 0, '[]', :t, :t)"
                    ),
                    {"t": now},
                )
                for tags in ('{"team": "web"}', '{"team": "db"}', '{"team": "web"}'):
                    await conn.execute(sa.text(line), {"t": now, "tags": tags})
            await asyncio.to_thread(command.upgrade, config, "head")
            async with engine.connect() as conn:
                sets = (await conn.execute(sa.text("SELECT count(*) FROM cost_tag_sets"))).scalar()
                numbers = (
                    (await conn.execute(sa.text("SELECT tag_set FROM cost_lines ORDER BY id")))
                    .scalars()
                    .all()
                )
                assert sets == 2 and numbers[0] == numbers[2] != numbers[1]
            await asyncio.to_thread(command.downgrade, config, "0038")
            async with engine.connect() as conn:
                rows = await conn.execute(sa.text("SELECT tags FROM cost_lines ORDER BY id"))
                tags = [t if isinstance(t, dict) else json.loads(t) for t in rows.scalars()]
                assert tags == [{"team": "web"}, {"team": "db"}, {"team": "web"}]
        finally:
            await engine.dispose()

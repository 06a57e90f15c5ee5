"""Team scoping (core/scoping.py), proven on a real table in a real database of each backend.

No resource is team-owned yet, so a throwaway model on its own MetaData stands in for one;
the app's Base, and so its migrations, never see it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import MetaData, String, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from opscenter.core.errors import NotFound
from opscenter.core.handlers import install_error_handlers
from opscenter.core.pagination import PageParams, paginate
from opscenter.core.principal import ALL_TEAMS, Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.models import Base as AppBase

TEAM_A, TEAM_B = 1, 2


class ScratchBase(DeclarativeBase):
    metadata = MetaData()


class Widget(ScratchBase):
    __tablename__ = "scoping_test_widgets"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(index=True)
    name: Mapped[str] = mapped_column(String(50))


def principal(*teams: int, all_teams: bool = False) -> Principal:
    permissions = {"read:widgets", *([ALL_TEAMS] if all_teams else [])}
    return Principal(
        user_id=7,
        username="scoped",
        role="custom",
        permissions=frozenset(permissions),
        team_ids=frozenset(teams),
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'scoping.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    eng = create_async_engine(url)
    async with eng.begin() as conn:
        await conn.run_sync(ScratchBase.metadata.drop_all)
        await conn.run_sync(ScratchBase.metadata.create_all)
    try:
        yield eng
    finally:
        async with eng.begin() as conn:
            await conn.run_sync(ScratchBase.metadata.drop_all)
        await eng.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    factory = async_sessionmaker(engine, expire_on_commit=False)
    async with factory() as s:
        s.add_all(
            [
                Widget(team_id=TEAM_A, name="alpha-1"),
                Widget(team_id=TEAM_A, name="alpha-2"),
                Widget(team_id=TEAM_B, name="bravo-1"),
            ]
        )
        await s.commit()
        yield s


async def ids_by_name(session: AsyncSession) -> dict[str, int]:
    rows = (await session.execute(select(Widget.name, Widget.id))).all()
    return {name: ident for name, ident in rows}


def test_the_scratch_model_is_not_part_of_the_app_schema() -> None:
    assert Widget.__tablename__ not in AppBase.metadata.tables
    assert ScratchBase.metadata is not AppBase.metadata


async def test_readable_hides_another_teams_rows(session: AsyncSession) -> None:
    stmt = select(Widget).order_by(Widget.id)
    mine = (await session.scalars(readable(stmt, Widget, principal(TEAM_A)))).all()
    assert [w.name for w in mine] == ["alpha-1", "alpha-2"]
    theirs = (await session.scalars(readable(stmt, Widget, principal(TEAM_B)))).all()
    assert [w.name for w in theirs] == ["bravo-1"]
    both = (await session.scalars(readable(stmt, Widget, principal(TEAM_A, TEAM_B)))).all()
    assert len(both) == 3
    assert (await session.scalars(readable(stmt, Widget, principal()))).all() == []
    # Scoping composes with the caller's own filters, and the total counts only what is
    # readable: a count must not reveal another team's rows either.
    filtered = readable(stmt.where(Widget.name.like("%-1")), Widget, principal(TEAM_A))
    assert [w.name for w in (await session.scalars(filtered)).all()] == ["alpha-1"]
    page, total = await paginate(
        session, readable(stmt, Widget, principal(TEAM_B)), PageParams(limit=10, offset=0)
    )
    assert total == 1 and [w.name for w in page] == ["bravo-1"]


async def test_all_teams_scope_sees_everything(session: AsyncSession) -> None:
    everyone = principal(all_teams=True)  # member of no team at all
    rows = (await session.scalars(readable(select(Widget), Widget, everyone))).all()
    assert sorted(w.name for w in rows) == ["alpha-1", "alpha-2", "bravo-1"]
    for name, ident in (await ids_by_name(session)).items():
        widget = await get_readable(session, Widget, ident, everyone, name="Widget")
        assert widget.name == name


async def test_get_readable_makes_a_foreign_row_a_404(session: AsyncSession) -> None:
    ids = await ids_by_name(session)
    alice = principal(TEAM_A)
    own = await get_readable(session, Widget, ids["alpha-2"], alice, name="Widget")
    assert own.name == "alpha-2"
    with pytest.raises(NotFound) as foreign:
        await get_readable(session, Widget, ids["bravo-1"], alice, name="Widget")
    missing_id = max(ids.values()) + 1000
    with pytest.raises(NotFound) as missing:
        await get_readable(session, Widget, missing_id, alice, name="Widget")
    assert foreign.value.status_code == 404 and foreign.value.code == "NOT_FOUND"
    # Indistinguishable from an id that does not exist: nothing leaks.
    assert foreign.value.detail == f"Widget {ids['bravo-1']} not found"
    assert missing.value.detail == f"Widget {missing_id} not found"


async def test_foreign_row_is_a_404_response(engine: AsyncEngine, session: AsyncSession) -> None:
    """Through the app's error handlers, as a route using get_readable would answer."""
    ids = await ids_by_name(session)
    factory = async_sessionmaker(engine, expire_on_commit=False)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/widgets/{widget_id}")
    async def read(widget_id: int, request: Request) -> dict[str, str]:
        caller = principal(int(request.headers["x-team"]))
        async with factory() as s:
            widget = await get_readable(s, Widget, widget_id, caller, name="Widget")
            return {"name": widget.name}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get(f"/widgets/{ids['alpha-1']}", headers={"x-team": str(TEAM_A)})
        assert r.status_code == 200 and r.json() == {"name": "alpha-1"}
        foreign = await c.get(f"/widgets/{ids['bravo-1']}", headers={"x-team": str(TEAM_A)})
        missing = await c.get("/widgets/999999", headers={"x-team": str(TEAM_A)})
    for r in (foreign, missing):
        assert r.status_code == 404
        assert r.json()["code"] == "NOT_FOUND" and set(r.json()) == {"detail", "code", "timestamp"}


def test_check_team_access() -> None:
    check_team_access(principal(TEAM_A), TEAM_A)
    check_team_access(principal(TEAM_A, TEAM_B), TEAM_B)
    check_team_access(principal(all_teams=True), TEAM_B)
    for caller in (principal(TEAM_A), principal()):
        with pytest.raises(NotFound) as refused:
            check_team_access(caller, TEAM_B)
        assert refused.value.status_code == 404
        assert refused.value.detail == f"Team {TEAM_B} not found"

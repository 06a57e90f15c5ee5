"""The command line, run as a person runs it (`python -m opscenter` in a subprocess, set up
by environment variables only): migrate, user create, and audit verify on an intact and on
a tampered trail, against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from opscenter.models import AuditLog, Role, User
from tests.conftest import ADMIN_PASSWORD
from tests.core.helpers import BACKENDS, fresh_database, no_stack_trace

# Settings read these names too (seed 004's spellings); none may leak in from outside.
_FOREIGN = {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "ALLOWED_ORIGINS", "ENVIRONMENT"}


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli_env(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("OPSCENTER_") and k not in _FOREIGN
    }
    env.update(
        OPSCENTER_DATA_DIR=str(data_dir),
        OPSCENTER_ADMIN_PASSWORD=ADMIN_PASSWORD,
        OPSCENTER_ENVIRONMENT="test",
        OPSCENTER_LOG_LEVEL="WARNING",
    )
    if database_url:
        # The plain spelling an operator writes; the app picks the async driver itself.
        env["DATABASE_URL"] = database_url.replace("postgresql+asyncpg://", "postgresql://")
    return env


async def opscenter(env: dict[str, str], cwd: Path, *args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "opscenter",
        *args,
        env=env,
        cwd=cwd,  # no stray .env file is read
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def _cli_flow(backend: str, tmp_path: Path) -> None:
    tmp_path.mkdir()
    data_dir = tmp_path / "data"
    with fresh_database(backend, data_dir) as url:
        env = cli_env(data_dir, url if backend == "postgres" else None)

        run = await opscenter(env, tmp_path, "migrate")
        assert run.code == 0, (backend, run.err)
        assert "database is up to date" in run.out

        run = await opscenter(
            env,
            tmp_path,
            *("user", "create", "alice", "alice@example.com"),
            *("--role", "operator", "--full-name", "Alice", "--password", "alice-password-long"),
        )
        assert run.code == 0, (backend, run.err)
        assert "created user alice (id " in run.out and "role operator" in run.out

        if backend == "sqlite":  # refusals, in words (independent, so run side by side)
            refusals = await asyncio.gather(
                *(
                    opscenter(env, tmp_path, "user", "create", *args, "--password", password)
                    for args, password in (
                        (("carol", "ALICE@example.com"), "p" * 12),
                        (("carol", "carol@example.com", "--role", "no-such-role"), "p" * 12),
                        (("carol", "carol@example.com"), "short"),
                    )
                )
            )
            words = ["already exists", "Unknown role", "password"]
            for run, word in zip(refusals, words, strict=True):
                assert run.code == 1, run.out
                assert run.err.startswith("error:") and word in run.err, run.err
                assert no_stack_trace(run.err)

        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                users = (
                    await conn.execute(
                        sa.select(User.username, Role.name, User.full_name)
                        .join(Role, Role.id == User.role_id)
                        .order_by(User.id)
                    )
                ).all()
                assert [tuple(u) for u in users] == [
                    ("admin", "admin", "Administrator"),
                    ("alice", "operator", "Alice"),
                ]
                table = AuditLog.__table__
                rows = (await conn.execute(sa.select(table).order_by(table.c.id))).mappings().all()
                assert [(r["action"], r["username"]) for r in rows] == [
                    ("user.create", "system (cli)")
                ]

            run = await opscenter(env, tmp_path, "audit", "verify")
            assert run.code == 0, (backend, run.err)
            assert f"audit trail intact: 1 rows, head {rows[-1]['hash']}" in run.out

            # Tamper with the row, past the database's own protection.
            async with engine.begin() as conn:
                if backend == "postgres":
                    await conn.execute(sa.text("DROP TRIGGER audit_logs_no_update ON audit_logs"))
                else:
                    await conn.execute(sa.text("DROP TRIGGER audit_logs_no_update"))
                await conn.execute(
                    sa.update(table)
                    .where(table.c.id == rows[0]["id"])
                    .values(details={**rows[0]["details"], "role": "admin"})
                )
        finally:
            await engine.dispose()

        run = await opscenter(env, tmp_path, "audit", "verify")
        assert run.code == 1, (backend, run.out)
        assert f"audit trail BROKEN at row {rows[0]['id']}" in run.err
        assert "edited" in run.err and no_stack_trace(run.err)


async def test_migrate_user_create_and_audit_verify_on_both_backends(tmp_path: Path) -> None:
    """Both backends side by side: a CLI process costs seconds, and they share nothing."""
    outcomes = await asyncio.gather(
        *(_cli_flow(backend, tmp_path / backend) for backend in BACKENDS), return_exceptions=True
    )
    for outcome in outcomes:  # both finished (and cleaned up) before any failure is raised
        if isinstance(outcome, BaseException):
            raise outcome


async def test_scale_out_commands_refuse_a_setup_that_cannot_run_jobs(tmp_path: Path) -> None:
    """`worker` and `serve --no-jobs` need the distributed engine; with the embedded one
    (or SQLite) they stop at once with a line that says what to set, not a stack trace."""
    env = cli_env(tmp_path / "data", None)
    for args, needs in (
        (("worker",), "OPSCENTER_JOB_ENGINE=procrastinate"),
        (("serve", "--no-jobs"), "OPSCENTER_JOB_ENGINE=procrastinate"),
    ):
        run = await opscenter(env, tmp_path, *args)
        assert run.code == 2, (args, run.out, run.err)
        assert needs in run.err, (args, run.err)
        assert no_stack_trace(run.err), run.err
    # procrastinate keeps its queue in the metadata database: SQLite can't hold it
    run = await opscenter({**env, "OPSCENTER_JOB_ENGINE": "procrastinate"}, tmp_path, "worker")
    assert run.code == 2 and "needs a PostgreSQL DATABASE_URL" in run.err, run.err
    assert no_stack_trace(run.err), run.err

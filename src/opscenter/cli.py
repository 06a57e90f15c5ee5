"""Command line: `opscenter serve | worker | migrate | user create | audit verify | ...`."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys

import typer
import uvicorn
from pydantic import ValidationError

from opscenter.cli_backups import backup_app, decrypt, keys_app
from opscenter.config import Settings, get_settings

app = typer.Typer(
    help="opscenter: ops control center built around trustworthy backups", no_args_is_help=True
)
user_app = typer.Typer(help="Manage users", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(backup_app, name="backup")
app.add_typer(keys_app, name="keys")
app.command("decrypt")(decrypt)
SQLITE_SWITCH_INTERVAL = 0.001  # seconds; see `serve`


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Default: OPSCENTER_HOST"),
    port: int | None = typer.Option(None, help="Default: OPSCENTER_PORT"),
    no_jobs: bool = typer.Option(
        False,
        "--no-jobs",
        help="API only: take no jobs here (OPSCENTER_JOB_ENGINE=procrastinate, with workers)",
    ),
) -> None:
    """Migrate, then serve the API and UI (and take jobs, unless --no-jobs)."""
    if no_jobs:
        os.environ["OPSCENTER_RUN_JOBS"] = "false"
    settings = _settings()
    if settings.effective_database_url.startswith("sqlite"):
        # SQLite's statements run on aiosqlite's threads, and each must take the interpreter
        # lock to hand its rows back: with the default 5 ms switch interval a busy event loop
        # keeps them waiting. 1 ms: about 10 % more list requests/s (bench/api.py).
        sys.setswitchinterval(SQLITE_SWITCH_INTERVAL)
    uvicorn.run(
        "opscenter.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        # Events are small JSON: compressing each frame for each of a thousand WebSocket
        # clients cost the fan-out more CPU than it saved bytes.
        ws_per_message_deflate=False,
    )


@app.command()
def worker(
    concurrency: int | None = typer.Option(
        None, min=1, max=64, help="Jobs at once. Default: OPSCENTER_JOB_CONCURRENCY"
    ),
) -> None:
    """Take jobs from the queue (OPSCENTER_JOB_ENGINE=procrastinate). SIGTERM or Ctrl-C let
    running jobs finish within OPSCENTER_JOB_SHUTDOWN_GRACE_SECONDS, then hand them back."""
    os.environ["OPSCENTER_RUN_JOBS"] = "true"
    if concurrency is not None:
        os.environ["OPSCENTER_JOB_CONCURRENCY"] = str(concurrency)
    settings = _settings()
    if settings.job_engine != "procrastinate":
        typer.secho(
            "error: a worker needs OPSCENTER_JOB_ENGINE=procrastinate and a PostgreSQL "
            "OPSCENTER_DATABASE_URL; with the embedded engine, `opscenter serve` runs the jobs",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    from opscenter.cli_actions import run_worker

    asyncio.run(run_worker(settings))


def _settings() -> Settings:
    """The settings, or a one-line error that says which variable to fix."""
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
        typer.secho(f"error: {problems}", fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def migrate() -> None:
    """Apply database migrations up to the newest."""
    from opscenter.bootstrap import migrate as run_migrations

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_migrations(settings.effective_database_url)
    typer.echo("database is up to date")


@user_app.command("create")
def user_create(
    username: str,
    email: str,
    role: str = typer.Option("viewer", help="admin, operator, viewer or a custom role"),
    full_name: str = typer.Option(""),
    password: str | None = typer.Option(None, help="Prompted for when not given"),
) -> None:
    """Create a user (acts as the system, recorded in the audit trail)."""
    from opscenter.cli_actions import create_user

    if password is None:
        password = getpass.getpass("Password: ")
    try:
        user_id = asyncio.run(create_user(username, email, role, full_name, password))
    except Exception as exc:  # shown to a person, in words
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created user {username} (id {user_id}, role {role})")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the hash chain of the audit trail; exit 1 when it was tampered with."""
    from opscenter.cli_actions import verify_audit

    report = asyncio.run(verify_audit())
    if report.valid:
        typer.echo(f"audit trail intact: {report.checked} rows, head {report.head_hash}")
        return
    typer.secho(
        f"audit trail BROKEN at row {report.first_bad_id}: {report.problem} "
        f"({report.checked} rows verified before it)",
        fg="red",
        err=True,
    )
    sys.exit(1)

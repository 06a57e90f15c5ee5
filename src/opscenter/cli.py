"""Command line: `opscenter serve | migrate | user create | audit verify`."""

from __future__ import annotations

import asyncio
import getpass
import sys

import typer
import uvicorn

from opscenter.cli_backups import backup_app, decrypt, keys_app
from opscenter.config import get_settings

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


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Default: OPSCENTER_HOST"),
    port: int | None = typer.Option(None, help="Default: OPSCENTER_PORT"),
) -> None:
    """Migrate, then serve the API and UI."""
    settings = get_settings()
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

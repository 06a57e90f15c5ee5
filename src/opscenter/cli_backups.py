"""`opscenter backup ...`, `decrypt` and `keys export`: the backup engine from a shell,
with progress bars, against the same database and storage as the server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import or_, select

from opscenter.backups import service
from opscenter.backups.schemas import BackupCreate, CompressionType, RestoreRequest
from opscenter.config import get_settings
from opscenter.core.context import AppContext
from opscenter.core.errors import AppError
from opscenter.core.failures import BackupError
from opscenter.core.hostfiles import HostFiles
from opscenter.core.principal import SYSTEM
from opscenter.core.security import Keyring
from opscenter.jobs.runner import TERMINAL
from opscenter.models import Backup, Job, JobStatus
from opscenter.streaming import keys as backup_keys
from opscenter.streaming.crypto import decrypt_stream, identity_file_text
from opscenter.verify import service as verify
from opscenter.verify.schemas import VerifyRequest

backup_app = typer.Typer(help="Run, list, restore and verify backups", no_args_is_help=True)
keys_app = typer.Typer(help="The installation's backup encryption key", no_args_is_help=True)
err = Console(stderr=True)


def _run(work: Callable[[AppContext], Awaitable[int]]) -> None:
    async def main() -> int:
        settings = get_settings()
        if settings.job_engine == "procrastinate":
            # Workers are there: the CLI hands its job to them and follows it, rather than
            # taking other people's jobs for as long as it runs.
            settings = settings.model_copy(update={"run_jobs": False})
        from opscenter.runtime import build_context, running  # every domain: only when run

        ctx = build_context(settings)
        async with running(ctx):
            return await work(ctx)

    try:
        code = asyncio.run(main())
    except (AppError, BackupError) as exc:
        err.print(f"[red]error:[/red] {getattr(exc, 'detail', None) or exc}")
        code = 1
    raise typer.Exit(code)


async def _follow(ctx: AppContext, job_id: int, label: str) -> Job:
    """A progress bar fed from the job's row until it ends."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(label, total=None)
        while True:
            async with ctx.db.read_session() as session:
                job = await session.get(Job, job_id)
            assert job is not None
            bar.update(
                task,
                completed=job.bytes_done,
                total=job.bytes_total,
                description=f"{label} ({job.phase or job.status})",
            )
            if job.status in TERMINAL:
                return job
            await asyncio.sleep(0.2)


def _outcome(job: Job, what: str) -> int:
    if job.status == JobStatus.SUCCEEDED:
        err.print(f"[green]{what} succeeded[/green]")
        return 0
    err.print(f"[red]{what} {job.status}[/red] ({job.error_code}): {job.error_message}")
    return 1


@backup_app.command("run")
def backup_run(
    server: int = typer.Option(..., help="Server id"),
    database: str = typer.Option(..., help="Database name, SQLite file or directory"),
    storage: list[int] = typer.Option(
        [], help="Storage provider id (default: the team's); repeat it for copies in several"
    ),
    compression: CompressionType = typer.Option(CompressionType.ZSTD),
    encrypt: bool = typer.Option(True, help="age encryption to the installation's key"),
    parallel_streams: int = typer.Option(
        1,
        min=1,
        max=16,
        help="PostgreSQL, MySQL/MariaDB: dump the data in this many parallel streams",
    ),
) -> None:
    """Back up one database now and wait for it, with a progress bar."""

    async def work(ctx: AppContext) -> int:
        async with ctx.db.write_session() as session:
            data = BackupCreate(
                server_id=server,
                database_name=database,
                storage_id=storage[0] if len(storage) == 1 else None,
                storage_ids=storage if len(storage) > 1 else None,
                compression_type=compression,
                encrypt=encrypt,
                parallel_streams=parallel_streams,
            )
            backup, job = await service.create_backup(session, SYSTEM, data)
            await session.commit()
        ctx.runner.submit(job.id)
        done = await _follow(ctx, job.id, f"backup #{backup.id} {database}")
        if done.status == JobStatus.SUCCEEDED:
            async with ctx.db.read_session() as session:
                rows = await session.scalars(
                    select(Backup)
                    .where(or_(Backup.id == backup.id, Backup.copy_of_id == backup.id))
                    .order_by(Backup.id)
                )
                for row in rows:
                    print(f"{row.id}\t{row.storage_key}\t{row.size_bytes}\t{row.checksum}")
        return _outcome(done, "backup")

    _run(work)


@backup_app.command("list")
def backup_list(
    server: int | None = typer.Option(None, help="Only this server's backups"),
    limit: int = typer.Option(20, min=1, max=1000),
) -> None:
    """The newest backups in the catalog."""

    async def work(ctx: AppContext) -> int:
        async with ctx.db.read_session() as session:
            stmt = service.filter_backups(
                service.backups_query(SYSTEM),
                server_id=server,
                db_type=None,
                status=None,
                database_name=None,
                schedule_id=None,
                start=None,
                end=None,
            )
            rows = (await session.scalars(stmt.limit(limit))).all()
        columns = ("id", "server", "database", "status", "size", "created", "verification")
        data = [
            (
                str(b.id),
                str(b.server_id),
                b.database_name,
                b.status,
                str(b.size_bytes or 0),
                b.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                b.verification_status,
            )
            for b in rows
        ]
        if not sys.stdout.isatty():  # for scripts: tab-separated, one backup per line
            print("\t".join(columns))
            for line in data:
                print("\t".join(line))
            return 0
        table = Table(*columns)
        for line in data:
            table.add_row(*line)
        Console().print(table)
        return 0

    _run(work)


@backup_app.command("restore")
def backup_restore(
    backup_id: int,
    database: str = typer.Option(..., help="Target database (created when missing)"),
    server: int | None = typer.Option(None, help="Target server (default: the backup's)"),
    drop_existing: bool = typer.Option(False, help="Replace a non-empty database's contents"),
    confirm: str | None = typer.Option(None, help="The database name, for production servers"),
) -> None:
    """Restore a backup and wait for it, with a progress bar."""

    async def work(ctx: AppContext) -> int:
        async with ctx.db.write_session() as session:
            data = RestoreRequest(
                target_server_id=server,
                target_database=database,
                drop_existing=drop_existing,
                confirm=confirm,
            )
            files = HostFiles(ctx.settings)
            _, job = await service.create_restore(session, SYSTEM, files, backup_id, data)
            await session.commit()
        ctx.runner.submit(job.id)
        return _outcome(await _follow(ctx, job.id, f"restore of #{backup_id}"), "restore")

    _run(work)


@backup_app.command("verify")
def backup_verify(
    backup_id: int,
    test_type: str = typer.Option(
        "deep",
        "--type",
        help="checksum (re-read, sha256), deep (decrypt, decompress, parse the whole dump) "
        "or restore (into a scratch database, row counts compared, then dropped)",
    ),
    sandbox: int | None = typer.Option(None, help="restore tests: server for the scratch db"),
) -> None:
    """Verify a backup now and wait, with a progress bar; the result is recorded on the
    backup (verification_status) exactly as through the API."""
    if test_type not in ("checksum", "deep", "restore"):
        raise typer.BadParameter("checksum, deep or restore", param_hint="--type")

    async def work(ctx: AppContext) -> int:
        async with ctx.db.write_session() as session:
            data = VerifyRequest(test_type=test_type, target_server_id=sandbox)
            run, job = await verify.create_verification(session, SYSTEM, backup_id, data)
            await session.commit()
        ctx.runner.submit(job.id)
        done = await _follow(ctx, job.id, f"{test_type} check of #{backup_id}")
        async with ctx.db.read_session() as session:
            row = await session.get(Backup, backup_id)
        if row is not None:
            err.print(f"backup #{backup_id}: verification_status {row.verification_status}")
        return _outcome(done, f"{test_type} verification (run {run.id})")

    _run(work)


def decrypt(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    output: Path | None = typer.Option(None, "-o", "--output", help="Default: standard output"),
) -> None:
    """Decrypt an artifact (.age) with the installation's key; pipe to `zstd -d` after."""
    settings = get_settings()
    keyring = Keyring.load_or_create(settings.keys_dir, settings.jwt_secret)
    keys = backup_keys.load_or_create(keyring, settings.keys_dir)
    with file.open("rb") as src:
        sink: Any = output.open("wb") if output else sys.stdout.buffer
        try:
            decrypt_stream(src, sink, [keys.identity])
        except BackupError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        finally:
            if output:
                sink.close()


@keys_app.command("export")
def keys_export() -> None:
    """Print the installation's age identity (age-keygen format) for offline safekeeping.
    With it, `age -d -i key.txt ARTIFACT | zstd -d | pg_restore ...` restores anywhere."""
    settings = get_settings()
    keyring = Keyring.load_or_create(settings.keys_dir, settings.jwt_secret)
    keys = backup_keys.load_or_create(keyring, settings.keys_dir)
    err.print("[yellow]This is the private key of every backup: store it offline.[/yellow]")
    sys.stdout.write(identity_file_text(keys.identity))

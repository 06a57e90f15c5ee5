"""Where a restore's checked dump goes: the restore targets, the sinks that feed a
tool's stdin (pg_restore, psql, mariadb, tar) or a staged SQLite file, and the
per-engine preparation of the target (create, replace, refuse a non-empty one).

A sink is handed the dump only by :mod:`opscenter.streaming.restore`, which withholds
its tail until the artifact is proven whole; :meth:`Sink.fail` kills the tool before
its input closes, so nothing half-written is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from opscenter.core.failures import BackupError, ErrorCode, scrub
from opscenter.engines import mysql, postgres
from opscenter.engines.mysql import MySQLConnection, classify_mysql_error, mysql_client_command
from opscenter.engines.postgres import (
    PgConnection,
    classify_pg_error,
    psql_command,
    quote_conninfo,
    select_pg_tool,
)
from opscenter.remote.runner import Command, CommandRunner, LocalRunner, RunningCommand
from opscenter.streaming.streams import enlarge_pipe, write_all

__all__ = [
    "MYSQL_TRAILER",
    "DirectoryTarget",
    "MySQLAdmin",
    "MySQLTarget",
    "PostgresTarget",
    "ProcessSink",
    "RestoreTarget",
    "Sink",
    "SqliteSink",
    "SqliteTarget",
    "TarSink",
    "TrailerSink",
    "pg_query",
    "pg_sink",
    "tar_path",
]

MYSQL_TRAILER = b"-- Dump completed"


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    conn: PgConnection
    #: ``--clean --if-exists``: drop objects of the dump before recreating them.
    clean: bool = False
    #: All-or-nothing (a failure rolls everything back). Keep it on.
    single_transaction: bool = True
    no_owner: bool = False
    #: Restoring over a non-empty database needs this (or ``clean``).
    allow_non_empty: bool = False
    #: Create the database first (it must not exist).
    create: bool = False
    #: ``drop_existing``: afterwards the database holds exactly what the backup holds.
    #: Every schema (public too) and large object is dropped and the dump restored in
    #: one psql transaction (see ``_REPLACE``): a failure leaves it as it was.
    replace: bool = False
    #: Also restore the cluster globals saved beside the dump (roles, tablespaces),
    #: before the dump, with ``psql -v ON_ERROR_STOP=0``: existing roles are an
    #: error psql reports and skips; every such error is in ``RestoreResult.warnings``.
    restore_globals: bool = False
    #: ``pg_restore --jobs``. Above 1 the dump is staged, after every check passed,
    #: in a private temp file under ``staging_dir`` (pg_restore reads a parallel
    #: restore out of order, so it needs a seekable file): that costs the dump's size
    #: on disk and gives up ``single_transaction``; a database the restore created is
    #: still dropped again on failure. Where the tools run elsewhere (SSH, a container)
    #: the file is staged there, in /tmp.
    jobs: int = 1
    staging_dir: str | None = None


@dataclass(frozen=True, slots=True)
class MySQLTarget:
    """A MySQL/MariaDB restore runs statement by statement, each committed as it goes:
    a failure or a crash part-way would leave the target half restored. So the whole
    artifact is read and checked first (sha256, age authentication, decompression and
    mysqldump's completion trailer), and only then does the first statement reach the
    target: a corrupt artifact never touches it. What remains (the server refusing a
    statement, a crash during the second pass) is reported by the caller, which records
    that the target is being written (``on_write``) before it is.

    (Restoring into a scratch schema and swapping it in is not simpler: RENAME TABLE
    cannot move tables with triggers across schemas, views and routines cannot be moved
    at all, and the swap itself would not be atomic either.)
    """

    conn: MySQLConnection
    #: ``drop_existing``: the database is dropped and created again (same character
    #: set and collation) before the dump, so it holds exactly what the backup holds.
    replace: bool = False
    create: bool = False


@dataclass(frozen=True, slots=True)
class SqliteTarget:
    path: str
    overwrite: bool = False


@dataclass(frozen=True, slots=True)
class DirectoryTarget:
    """Extract into ``path``, which must not exist or be empty."""

    path: str


RestoreTarget = PostgresTarget | MySQLTarget | SqliteTarget | DirectoryTarget


class Sink(Protocol):
    """Where the checked dump is written; the restore stream drives it."""

    name: str
    process: RunningCommand | None

    async def start(self, runner: CommandRunner) -> None: ...

    def write(self, data: bytes) -> None: ...

    def close_input(self) -> None: ...

    async def finish(self) -> None: ...

    async def fail(self) -> None: ...

    def error_for(self, rc: int) -> BackupError: ...


def _error_lines(stderr: str, limit: int = 25) -> str:
    keep = [
        ln
        for ln in stderr.splitlines()
        if any(k in ln for k in ("error", "ERROR", "FATAL", "Command was", "DETAIL", "HINT"))
    ]
    return "\n".join((keep or stderr.splitlines())[-limit:])


class ProcessSink:
    """Feeds a tool's stdin; its exit status decides."""

    def __init__(
        self,
        name: str,
        command: Command,
        classify: Callable[[str], ErrorCode | None],
        *,
        failure_code: ErrorCode = ErrorCode.RESTORE_FAILED,
        trailer: bytes | None = None,
        tool: str | None = None,
    ) -> None:
        self.name = name
        self.command = command
        #: What failure messages name (default: the command's program).
        self.tool = tool or command.tool
        self.classify = classify
        self.failure_code = failure_code
        self.trailer = trailer
        self.process: RunningCommand | None = None
        self._wfd: int | None = None
        self._tail = b""

    async def start(self, runner: CommandRunner) -> None:
        rfd, wfd = os.pipe()
        enlarge_pipe(wfd)
        try:
            self.process = await runner.start(self.command, stdin=rfd)
        except FileNotFoundError as exc:
            os.close(wfd)
            raise BackupError(
                ErrorCode.TOOL_MISSING, f"{self.command.tool} is not installed", stage=self.name
            ) from exc
        except BaseException:
            os.close(wfd)
            raise
        finally:
            os.close(rfd)
        self._wfd = wfd

    def write(self, data: bytes) -> None:
        assert self._wfd is not None
        if self.trailer is not None:
            self._tail = (self._tail + data[-512:])[-512:]
        write_all(self._wfd, data)

    def close_input(self) -> None:
        if self.trailer is not None and self.trailer not in self._tail:
            raise BackupError(
                ErrorCode.VERIFY_FAILED,
                f"the dump does not end with {self.trailer.decode()!r}: it is incomplete",
                stage=self.name,
            )
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None

    async def finish(self) -> None:
        return None

    async def fail(self) -> None:
        if self.process is not None:
            self.process.kill()
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None

    def error_for(self, rc: int) -> BackupError:
        stderr = self.process.stderr_tail(20000) if self.process else ""
        code = self.classify(stderr) or self.failure_code
        return BackupError(
            code,
            f"{self.tool} failed with exit status {rc}",
            stage=self.name,
            detail=scrub(_error_lines(stderr), self.command.secrets),
        )


class TrailerSink:
    """Reads the dump to its end in this process and checks its last line."""

    def __init__(self, trailer: bytes, *, name: str = "trailer") -> None:
        self.name = name
        self.process: RunningCommand | None = None
        self.trailer = trailer
        self._tail = b""

    async def start(self, runner: CommandRunner) -> None:
        return None

    def write(self, data: bytes) -> None:
        self._tail = (self._tail + data[-512:])[-512:]

    def close_input(self) -> None:
        if self.trailer not in self._tail:
            raise BackupError(
                ErrorCode.VERIFY_FAILED,
                f"the dump does not end with {self.trailer.decode()!r}: it is incomplete",
                stage=self.name,
            )

    async def finish(self) -> None:
        return None

    async def fail(self) -> None:
        return None

    def error_for(self, rc: int) -> BackupError:
        return BackupError(ErrorCode.VERIFY_FAILED, "verification failed", stage=self.name)


class SqliteSink:
    """Writes a staged copy, checks ``PRAGMA integrity_check``, renames into place."""

    def __init__(self, final: Path | None, *, overwrite: bool = False) -> None:
        self.name = "sqlite"
        self.process: RunningCommand | None = None
        self.final = final
        self.overwrite = overwrite
        directory = final.parent if final is not None else Path(tempfile.gettempdir())
        self._directory = directory
        self._tmp: Path | None = None
        self._fd: int | None = None

    async def start(self, runner: CommandRunner) -> None:
        if self.final is not None and not isinstance(runner, LocalRunner):
            raise BackupError(
                ErrorCode.INVALID_CONFIG,
                "an SQLite restore writes the file on this host: restore into a local or "
                "sqlite server",
                stage=self.name,
            )
        if self.final is not None and self.final.exists() and not self.overwrite:
            raise BackupError(
                ErrorCode.TARGET_NOT_EMPTY, f"{self.final} exists (overwrite not requested)"
            )
        self._directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=".opscenter-restore-", suffix=".partial", dir=self._directory
        )
        self._fd, self._tmp = fd, Path(tmp)

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        write_all(self._fd, data)

    def close_input(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None

    def _check_and_commit(self) -> None:
        assert self._tmp is not None
        con = sqlite3.connect(f"file:{self._tmp}?mode=ro", uri=True)
        try:
            rows = con.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise BackupError(
                ErrorCode.VERIFY_FAILED, f"not a valid SQLite database: {exc}", stage="sqlite"
            ) from exc
        finally:
            con.close()
        if rows != [("ok",)]:
            raise BackupError(
                ErrorCode.VERIFY_FAILED,
                "SQLite integrity_check failed: " + "; ".join(str(r[0]) for r in rows[:5]),
                stage="sqlite",
            )
        if self.final is None:
            self._tmp.unlink()
        else:
            os.replace(self._tmp, self.final)
            dfd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._tmp = None

    async def finish(self) -> None:
        try:
            await asyncio.to_thread(self._check_and_commit)
        except BaseException:
            await self.fail()
            raise

    async def fail(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            self._tmp = None

    def error_for(self, rc: int) -> BackupError:
        return BackupError(ErrorCode.RESTORE_FAILED, "sqlite restore failed", stage="sqlite")


async def _restore_staged(
    runner: CommandRunner, command: Command, path: str, time_limit: float | None
) -> None:
    """``pg_restore --jobs`` of a staged dump file (on the runner's host)."""
    command = dataclasses.replace(command, argv=(*command.argv, path))
    # No limit of its own beyond the restore's: a big parallel restore takes hours.
    res = await runner.run(command, limit_seconds=time_limit or 7 * 86400)
    if res.returncode != 0:
        raise BackupError(
            classify_pg_error(res.stderr) or ErrorCode.RESTORE_FAILED,
            f"pg_restore failed with exit status {res.returncode}",
            stage="pg_restore",
            detail=scrub(_error_lines(res.stderr), command.secrets),
        )


class _StagedPgSink:
    """Parallel PostgreSQL restore: the verified dump goes to a temp file first, then
    ``pg_restore --jobs`` reads it; the file is removed whatever happens."""

    def __init__(self, command: Command, staging_dir: Path, time_limit: float | None) -> None:
        self.name = "pg_restore"
        self.process: RunningCommand | None = None
        self.command = command
        self.staging_dir = staging_dir
        self.time_limit = time_limit
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._runner: CommandRunner | None = None

    async def start(self, runner: CommandRunner) -> None:
        self._runner = runner
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=".opscenter-restore-", suffix=".dump", dir=self.staging_dir
        )
        self._fd, self._tmp = fd, Path(tmp)

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        write_all(self._fd, data)

    def close_input(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def finish(self) -> None:
        assert self._runner is not None and self._tmp is not None
        try:
            await _restore_staged(self._runner, self.command, str(self._tmp), self.time_limit)
        finally:
            await self.fail()

    async def fail(self) -> None:
        self.close_input()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            self._tmp = None

    def error_for(self, rc: int) -> BackupError:
        return BackupError(ErrorCode.RESTORE_FAILED, "staging the dump failed", stage=self.name)


class _RemoteStagedPgSink(ProcessSink):
    """Parallel PostgreSQL restore where the tools run elsewhere (an SSH host, a
    container): ``cat`` stages the verified dump in a private file there, then
    ``pg_restore --jobs`` reads it there; the file is removed whatever happens."""

    # umask: only the login can read the dump; noclobber (O_EXCL): the random name is
    # never an existing file, nor a symlink planted in /tmp.
    _STAGE = 'umask 077 && set -C && exec cat > "$1"'

    def __init__(self, command: Command, time_limit: float | None) -> None:
        self.path = f"/tmp/.opscenter-restore-{os.urandom(8).hex()}.dump"  # noqa: S108 (see _STAGE)
        super().__init__(
            "staging",
            Command(("sh", "-c", self._STAGE, "sh", self.path)),
            lambda err: ErrorCode.DISK_FULL if "No space left" in err else None,
        )
        self.restore = command
        self.time_limit = time_limit
        self._runner: CommandRunner | None = None

    async def start(self, runner: CommandRunner) -> None:
        self._runner = runner
        await super().start(runner)

    async def finish(self) -> None:
        assert self._runner is not None
        try:
            await _restore_staged(self._runner, self.restore, self.path, self.time_limit)
        finally:
            await self._remove()

    async def fail(self) -> None:
        await super().fail()
        await self._remove()

    async def _remove(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.run(Command(("rm", "-f", "--", self.path)), limit_seconds=60)


class TarSink(ProcessSink):
    """``tar -x`` into a staging directory beside the target, renamed on success.

    The directory work runs through the runner too: the target is on the runner's host
    (this one, an SSH host or a container)."""

    def __init__(self, runner_tar: str, final: Path) -> None:
        self.final = final
        self.staging = final.parent / f".{final.name}.restore-{os.urandom(4).hex()}.partial"
        self._runner: CommandRunner | None = None
        super().__init__(
            "tar",
            Command(
                (
                    runner_tar,
                    "--extract",
                    "--file=-",
                    "--preserve-permissions",
                    "--numeric-owner",
                    f"--directory={self.staging}",
                )
            ),
            lambda _s: None,
        )

    async def _sh(self, script: str, what: str) -> None:
        assert self._runner is not None
        command = Command(("sh", "-c", script, "sh", str(self.staging), str(self.final)))
        res = await self._runner.run(command, limit_seconds=600)
        if res.returncode == 3:
            raise BackupError(
                ErrorCode.TARGET_NOT_EMPTY, f"{self.final} exists and is not an empty directory"
            )
        if res.returncode != 0:
            raise BackupError(
                ErrorCode.RESTORE_FAILED, f"{what} failed", stage=self.name, detail=res.stderr
            )

    async def start(self, runner: CommandRunner) -> None:
        self._runner = runner
        await self._sh(
            '{ [ ! -e "$2" ] && [ ! -L "$2" ]; } || '
            '{ [ -d "$2" ] && [ -z "$(ls -A -- "$2")" ]; } || exit 3; '
            'mkdir -p -- "${1%/*}" && mkdir -m 700 -- "$1"',
            f"creating {self.staging}",
        )
        try:
            await super().start(runner)
        except BaseException:
            await self._remove_staging()
            raise

    async def finish(self) -> None:
        try:
            # The target was checked empty at start: rmdir refuses it if that changed.
            await self._sh(
                '{ [ ! -d "$2" ] || rmdir -- "$2"; } && mv -T -- "$1" "$2"',
                f"moving the restored files into {self.final}",
            )
        except BaseException:
            await self.fail()
            raise

    async def fail(self) -> None:
        await super().fail()
        if self.process is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.process.wait(), 10)
        await self._remove_staging()

    async def _remove_staging(self) -> None:
        with contextlib.suppress(Exception):
            await self._sh('rm -rf -- "$1"', "removing the staging directory")


async def pg_query(runner: CommandRunner, conn: PgConnection, sql: str, stage: str) -> str:
    """Run one statement with psql; its output, or a classified error."""
    psql = (await select_pg_tool(runner, "psql", None)).path
    res = await runner.run(psql_command(psql, conn, sql), limit_seconds=conn.connect_timeout + 60)
    if res.returncode != 0:
        raise BackupError(
            classify_pg_error(res.stderr) or ErrorCode.RESTORE_FAILED,
            f"query on {conn.host}:{conn.port}/{conn.database} failed",
            stage=stage,
            detail=_error_lines(res.stderr),
        )
    return res.stdout.decode().strip()


#: Empties the database inside the restore's transaction; the default public schema
#: (owner and grants as CREATE DATABASE makes it) is created again for the dump.
_REPLACE_PRELUDE = r"""BEGIN;
SET LOCAL client_min_messages = warning;
DO $opscenter$
DECLARE s name;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace
           WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
  PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
  CREATE SCHEMA public;
  COMMENT ON SCHEMA public IS 'standard public schema';
  IF current_setting('server_version_num')::int >= 150000 THEN
    ALTER SCHEMA public OWNER TO pg_database_owner;
    GRANT USAGE ON SCHEMA public TO PUBLIC;
  ELSE
    GRANT ALL ON SCHEMA public TO PUBLIC;
  END IF;
END
$opscenter$;"""
#: pg_restore turns the archive into SQL after the prelude; psql runs it all in one
#: transaction that only ``COMMIT`` (written once pg_restore succeeded) ends well: a
#: failed pg_restore sends an error instead, and a killed pipeline never commits.
_REPLACE = (
    '{ printf "%s\n" "$1"; "$2" --file=- OPTIONS && echo "COMMIT;" || echo "$3"; } '
    '| { shift 3; exec "$@"; }'
)
_REPLACE_FAILED = "DO $$ BEGIN RAISE EXCEPTION 'pg_restore failed: nothing was restored'; END $$;"


async def _pg_replace_sink(runner: CommandRunner, target: PostgresTarget) -> ProcessSink:
    conn = target.conn
    pg_restore = (await select_pg_tool(runner, "pg_restore", None)).path
    psql = (await select_pg_tool(runner, "psql", None)).path
    script = _REPLACE.replace("OPTIONS", "--no-owner" if target.no_owner else "")
    argv = (
        "sh",
        "-c",
        script,
        "sh",
        _REPLACE_PRELUDE,
        pg_restore,
        _REPLACE_FAILED,
        psql,
        *conn.args(),
        "--no-psqlrc",
        "--quiet",
        "--set=ON_ERROR_STOP=1",
        f"--dbname=dbname={quote_conninfo(conn.database)}",
        "--file=-",
    )
    command = Command(argv, env=conn.env(), secrets=conn.secrets())
    return ProcessSink("pg_restore", command, classify_pg_error, tool="pg_restore | psql")


async def pg_sink(
    runner: CommandRunner, target: PostgresTarget, time_limit: float | None
) -> ProcessSink | _StagedPgSink | _RemoteStagedPgSink:
    """Prepare the PostgreSQL target (create it, or refuse a non-empty one) and return
    the sink for its pg_restore: piped, staged for a parallel restore, or replacing."""
    conn = target.conn
    if target.replace and not target.create:
        if target.jobs > 1:
            raise BackupError(
                ErrorCode.INVALID_CONFIG,
                "a parallel restore cannot replace a database in one transaction: restore "
                "into a new database, or with one job",
                stage="check",
            )
        return await _pg_replace_sink(runner, target)
    if target.create:
        await pg_query(
            runner,
            conn.with_database("postgres"),
            f"CREATE DATABASE {postgres.quote_ident(conn.database)}",
            "create",
        )
    elif not (target.clean or target.allow_non_empty):
        n = await pg_query(
            runner,
            conn,
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where c.relkind in ('r','v','m','S','f','p') "
            "and n.nspname not in ('pg_catalog','information_schema') "
            "and n.nspname not like 'pg\\_toast%'",
            "check",
        )
        if int(n or 0) > 0:
            raise BackupError(
                ErrorCode.TARGET_NOT_EMPTY,
                f"database {conn.database!r} already has {n} relations; restore into a new "
                "database, or choose clean (drop and recreate the dump's objects)",
                stage="check",
            )
    tool = await select_pg_tool(runner, "pg_restore", None)
    argv = [
        tool.path,
        *conn.args(),
        f"--dbname=dbname={quote_conninfo(conn.database)}",
        "--exit-on-error",
    ]
    if target.single_transaction and target.jobs == 1:
        argv.append("--single-transaction")
    if target.clean:
        argv += ["--clean", "--if-exists"]
    if target.no_owner:
        argv.append("--no-owner")
    if target.jobs > 1:
        argv.append(f"--jobs={target.jobs}")
        command = Command(tuple(argv), env=conn.env(), secrets=conn.secrets())
        if not isinstance(runner, LocalRunner):
            return _RemoteStagedPgSink(command, time_limit)
        staging = Path(target.staging_dir or tempfile.gettempdir())
        return _StagedPgSink(command, staging, time_limit)
    return ProcessSink(
        "pg_restore",
        Command(tuple(argv), env=conn.env(), secrets=conn.secrets()),
        classify_pg_error,
    )


class MySQLAdmin:
    """The short statements of a MySQL restore, each run by the client on its own."""

    def __init__(self, runner: CommandRunner, conn: MySQLConnection, client: str) -> None:
        self.runner = runner
        self.conn = conn
        self.client = client

    async def query(self, sql: str, what: str, *, database: str | None = None) -> str:
        conn = self.conn
        command = mysql_client_command(
            self.client, conn, "--batch", "--skip-column-names", "-e", sql, database=database
        )
        res = await self.runner.run(command, limit_seconds=conn.connect_timeout + 60)
        if res.returncode != 0:
            errors = [ln for ln in res.stderr.splitlines() if "ERROR" in ln]
            why = (errors or res.stderr.strip().splitlines() or ["no error message"])[-1]
            raise BackupError(
                classify_mysql_error(res.stderr) or ErrorCode.RESTORE_FAILED,
                f"{what} on {conn.host}:{conn.port} failed: {scrub(why, conn.secrets())}",
                stage="check",
            )
        return res.stdout.decode().strip()

    async def check(self, target: MySQLTarget) -> None:
        """Read-only: may the restore go into this database?"""
        if target.create or target.replace:
            return
        n = await self.query(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
            "counting the tables",
            database=self.conn.database,
        )
        if int(n or 0) > 0:
            raise BackupError(
                ErrorCode.TARGET_NOT_EMPTY,
                f"database {self.conn.database!r} already has {n} tables; restore into a new "
                "database or replace its contents",
                stage="check",
            )

    async def prepare(self, target: MySQLTarget) -> None:
        """The first change to the target: create it, or drop and create it again."""
        name = mysql.quote_ident(self.conn.database)
        if target.create:
            await self.query(
                f"CREATE DATABASE {name} CHARACTER SET utf8mb4", "creating the database"
            )
        elif target.replace:
            charset = await self.query(
                "SELECT CONCAT(DEFAULT_CHARACTER_SET_NAME, ' ', DEFAULT_COLLATION_NAME) "
                "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE()",
                "reading the database's character set",
                database=self.conn.database,
            )
            character_set, collation = charset.split()
            await self.query(
                f"DROP DATABASE {name}; CREATE DATABASE {name} "
                f"CHARACTER SET {character_set} COLLATE {collation}",
                "dropping and creating the database again",
            )

    def sink(self) -> ProcessSink:
        cmd = mysql_client_command(
            self.client, self.conn, "--binary-mode", "--batch", database=self.conn.database
        )
        return ProcessSink("mariadb", cmd, classify_mysql_error, trailer=MYSQL_TRAILER)


async def tar_path(runner: CommandRunner) -> str:
    """The path of ``tar`` on the runner's host."""
    tar = await runner.which("tar")
    if not tar:
        raise BackupError(ErrorCode.TOOL_MISSING, "tar is not installed")
    return tar

"""Dump sources: a database or directory description -> a command writing the dump to stdout.

A source probes what it needs through a :class:`~opscenter.remote.runner.CommandRunner`
(server version, which tool fits) and returns a :class:`DumpPlan` whose ``command``
writes the whole dump to stdout. Passwords never appear in argv: PostgreSQL gets
``PGPASSWORD`` in the environment, MySQL/MariaDB a 0600 ``--defaults-extra-file``
that the runner hands over without leaving it on disk (see ``remote.runner``).
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines.mysql import (
    MySQLConnection,
    classify_mysql_error,
    probe_mysql_server,
    resolve_mysql_tool,
)
from opscenter.engines.postgres import (
    PG_BIN_GLOBS,
    PgConnection,
    classify_pg_error,
    find_pg_tools,
    find_psql,
    newest_fitting,
    pg_can_read_authid,
    probe_pg_server,
    quote_conninfo,
)
from opscenter.remote.runner import PROBE_TIMEOUT, Command, CommandRunner

__all__ = [
    "DirectorySource",
    "DumpPlan",
    "DumpSource",
    "Engine",
    "MySQLSource",
    "PgGlobalsSource",
    "PostgresSource",
    "SqliteSource",
]


class Engine(StrEnum):
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"
    SQLITE = "sqlite"
    FILES = "files"


@dataclass(frozen=True, slots=True)
class DumpPlan:
    """What to run and what we learned while probing (goes into the manifest)."""

    command: Command
    engine: Engine
    database: str
    tool: str
    tool_version: str
    server_version: str | None
    #: Natural extension of the raw dump: ``dump`` (pg custom), ``sql``, ``sqlite3``, ``tar``.
    extension: str
    #: ``pg_custom``, ``mysql_sql``, ``sqlite_db`` or ``tar``: what restore must feed it to.
    dump_format: str


@runtime_checkable
class DumpSource(Protocol):
    @property
    def engine(self) -> Engine: ...

    @property
    def label(self) -> str:
        """Database name or path, for manifests and messages."""
        ...

    async def plan(self, runner: CommandRunner) -> DumpPlan:
        """Probe and build the dump command; raise a classified BackupError early."""
        ...

    def classify_failure(self, returncode: int, stderr: str) -> ErrorCode:
        """Map a failed dump's exit status and stderr to an error code."""
        ...


@dataclass(frozen=True, slots=True)
class PostgresSource:
    """``pg_dump -Fc -Z0``: custom format (parallel-restorable, selective) uncompressed,
    so our own stage does the compression with more cores and a better codec."""

    conn: PgConnection
    lock_wait_timeout_ms: int = 60_000
    #: Skip the probe when known (``server_version_num``, e.g. 150020).
    server_version_num: int | None = None
    extra_args: tuple[str, ...] = ()
    bin_globs: tuple[str, ...] = PG_BIN_GLOBS
    engine: Engine = Engine.POSTGRESQL

    @property
    def label(self) -> str:
        return self.conn.database

    async def plan(self, runner: CommandRunner) -> DumpPlan:
        server_version: str | None = None
        num = self.server_version_num
        # The server probe and the search for pg_dump run concurrently.
        tools_task = asyncio.ensure_future(find_pg_tools(runner, "pg_dump", self.bin_globs))
        try:
            if num is None:
                num, server_version = await probe_pg_server(runner, self.conn, globs=self.bin_globs)
            tools = await tools_task
        finally:
            if not tools_task.done():
                tools_task.cancel()
                with contextlib.suppress(BaseException):
                    await tools_task
        server_major = num // 10000
        tool = newest_fitting(tools, "pg_dump", server_major, self.bin_globs)
        argv = (
            tool.path,
            *self.conn.args(),
            "--format=custom",
            "--compress=0",
            f"--lock-wait-timeout={self.lock_wait_timeout_ms}",
            *self.extra_args,
        )
        return DumpPlan(
            command=Command(argv, env=self.conn.env(), secrets=self.conn.secrets()),
            engine=self.engine,
            database=self.conn.database,
            tool="pg_dump",
            tool_version=tool.version,
            server_version=server_version or str(num),
            extension="dump",
            dump_format="pg_custom",
        )

    def classify_failure(self, returncode: int, stderr: str) -> ErrorCode:
        return classify_pg_error(stderr) or ErrorCode.DUMP_FAILED

    async def diagnose(self, runner: CommandRunner, error: BackupError) -> BackupError:
        """A dump that lost its connection: was the database dropped under it?

        ``DROP DATABASE ... WITH (FORCE)`` terminates pg_dump's session, which then
        reports a closed connection; a fresh probe tells that from a network failure.
        """
        if error.code not in (ErrorCode.UNREACHABLE, ErrorCode.DUMP_FAILED):
            return error
        try:
            await probe_pg_server(runner, self.conn, globs=self.bin_globs)
        except BackupError as probe_error:
            if probe_error.code is ErrorCode.DATABASE_MISSING:
                return BackupError(
                    ErrorCode.DATABASE_MISSING,
                    f"database {self.conn.database!r} was dropped while pg_dump was running; "
                    "nothing was stored",
                    stage="dump",
                    detail=error.detail,
                )
        return error


@dataclass(frozen=True, slots=True)
class PgGlobalsSource:
    """``pg_dumpall --globals-only``: roles, memberships, role and database settings,
    tablespaces; saved beside a database's dump.

    Role passwords are included only when the account may read ``pg_authid``
    (superuser); otherwise ``--no-role-passwords`` dumps the rest.
    """

    conn: PgConnection
    #: Directory of the pg_dump chosen for the main dump: pg_dumpall there has its version.
    tool_dir: str
    tool_version: str = ""
    server_version: str | None = None
    bin_globs: tuple[str, ...] = PG_BIN_GLOBS
    engine: Engine = Engine.POSTGRESQL

    @property
    def label(self) -> str:
        return self.conn.database

    async def plan(self, runner: CommandRunner) -> DumpPlan:
        return (await self.plan_with_access(runner))[0]

    async def plan_with_access(self, runner: CommandRunner) -> tuple[DumpPlan, bool]:
        """The plan, and whether role passwords are included."""
        psql = posixpath.join(self.tool_dir, "psql")
        try:
            readable = await pg_can_read_authid(runner, psql, self.conn)
        except (FileNotFoundError, PermissionError):
            readable = await pg_can_read_authid(
                runner, await find_psql(runner, self.bin_globs), self.conn
            )
        argv = [
            posixpath.join(self.tool_dir, "pg_dumpall"),
            *self.conn.args(),
            # pg_dumpall ignores PGDATABASE; connect where the account surely may.
            f"--database=dbname={quote_conninfo(self.conn.database)}",
            "--globals-only",
        ]
        if not readable:
            argv.append("--no-role-passwords")
        version = self.tool_version.replace("pg_dump ", "pg_dumpall ", 1)
        plan = DumpPlan(
            command=Command(tuple(argv), env=self.conn.env(), secrets=self.conn.secrets()),
            engine=self.engine,
            database=self.conn.database,
            tool="pg_dumpall",
            tool_version=version or "pg_dumpall",
            server_version=self.server_version,
            extension="globals.sql",
            dump_format="pg_globals_sql",
        )
        return plan, readable

    def classify_failure(self, returncode: int, stderr: str) -> ErrorCode:
        return classify_pg_error(stderr) or ErrorCode.DUMP_FAILED

    @staticmethod
    def lacks_privilege(error: BackupError) -> bool:
        """The account may not read some catalog pg_dumpall needs (not a fault)."""
        text = f"{error.message}\n{error.detail}".lower()
        return "permission denied" in text or "must be superuser" in text


@dataclass(frozen=True, slots=True)
class MySQLSource:
    """``mariadb-dump``/``mysqldump --single-transaction`` (consistent for InnoDB)."""

    conn: MySQLConnection
    extra_args: tuple[str, ...] = ()
    tools: tuple[str, ...] = ("mariadb-dump", "mysqldump")
    probe: bool = True
    #: Parallel dumps: the longest (seconds) the read lock may be waited for and held
    #: while they open their snapshots; writers queue behind it meanwhile.
    lock_timeout: float = 10.0
    engine: Engine = Engine.MYSQL

    @property
    def label(self) -> str:
        return self.conn.database

    async def plan(self, runner: CommandRunner) -> DumpPlan:
        server_version = await probe_mysql_server(runner, self.conn) if self.probe else None
        tool, version = await resolve_mysql_tool(runner, self.tools)
        defaults = self.conn.defaults_file()
        # The dump tool writes its text through stdio in 4 KiB pieces: into a pipe, that is
        # a syscall and a wake-up of our reader each (250k per GB). coreutils' stdbuf gives
        # its stdout a 4 MiB buffer: ~10% less wall time on 2 cores (bench/backup_mysql.py).
        stdbuf = await runner.which("stdbuf")
        argv = (
            *((stdbuf, "-o4M") if stdbuf else ()),
            tool,
            f"--defaults-extra-file={defaults.ref}",  # must be the first option
            "--single-transaction",
            "--quick",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--no-tablespaces",
            "--default-character-set=utf8mb4",
            *self.extra_args,
            "--",
            self.conn.database,
        )
        return DumpPlan(
            command=Command(argv, secret_files=(defaults,), secrets=self.conn.secrets()),
            engine=self.engine,
            database=self.conn.database,
            tool=Path(tool).name,
            tool_version=version,
            server_version=server_version,
            extension="sql",
            dump_format="mysql_sql",
        )

    def classify_failure(self, returncode: int, stderr: str) -> ErrorCode:
        return classify_mysql_error(stderr) or ErrorCode.DUMP_FAILED


# --------------------------------------------------------------------------- SQLite

_SQLITE_SCRIPT = Path(__file__).with_name("_sqlite_stream.py")
SQLITE_MISSING_EXIT = 3


@dataclass(frozen=True, slots=True)
class SqliteSource:
    """SQLite's online backup API into a private temp copy, streamed to stdout.

    The temp copy is the one staging file the engine allows: a live SQLite file (WAL)
    cannot be read consistently as a byte stream. It is unlinked as soon as it is open.
    """

    path: str
    python: str = sys.executable
    temp_dir: str | None = None
    engine: Engine = Engine.SQLITE

    @property
    def label(self) -> str:
        return self.path

    async def plan(self, runner: CommandRunner) -> DumpPlan:
        argv = [self.python, "-I", str(_SQLITE_SCRIPT), self.path]
        if self.temp_dir:
            argv.append(self.temp_dir)
        res = await runner.run(
            Command((self.python, "-I", "-c", "import sqlite3;print(sqlite3.sqlite_version)")),
            limit_seconds=PROBE_TIMEOUT,
        )
        version = "sqlite " + res.stdout.decode().strip()
        return DumpPlan(
            command=Command(tuple(argv)),
            engine=self.engine,
            database=Path(self.path).name,
            tool="sqlite3-backup",
            tool_version=version,
            server_version=None,
            extension="sqlite3",
            dump_format="sqlite_db",
        )

    def classify_failure(self, returncode: int, stderr: str) -> ErrorCode:
        if returncode == SQLITE_MISSING_EXIT:
            return ErrorCode.SOURCE_MISSING
        if "no space left" in stderr.lower():
            return ErrorCode.DISK_FULL
        return ErrorCode.DUMP_FAILED


# --------------------------------------------------------------------------- files


@dataclass(frozen=True, slots=True)
class DirectorySource:
    """A POSIX (pax) tar stream of a directory: modes, symlinks, mtimes, numeric owners.

    GNU tar exits 1 when a file changed while being read; that fails the backup
    (an inconsistent archive is not a backup).
    """

    path: str
    excludes: tuple[str, ...] = ()
    tar: str = "tar"
    engine: Engine = Engine.FILES

    @property
    def label(self) -> str:
        return self.path

    async def plan(self, runner: CommandRunner) -> DumpPlan:
        tar = await runner.which(self.tar)
        if not tar:
            raise BackupError(ErrorCode.TOOL_MISSING, f"{self.tar} is not installed")
        res = await runner.run(Command((tar, "--version")), limit_seconds=PROBE_TIMEOUT)
        version = res.stdout.decode("utf-8", "replace").strip().splitlines()[0]
        argv = [
            tar,
            "--create",
            "--file=-",
            "--format=posix",
            "--numeric-owner",
            f"--directory={self.path}",
        ]
        argv += [f"--exclude={pattern}" for pattern in self.excludes]
        argv.append(".")
        return DumpPlan(
            command=Command(tuple(argv)),
            engine=self.engine,
            database=Path(self.path).name,
            tool="tar",
            tool_version=version,
            server_version=None,
            extension="tar",
            dump_format="tar",
        )

    def classify_failure(self, returncode: int, stderr: str) -> ErrorCode:
        low = stderr.lower()
        if "cannot chdir" in low or "cannot open: no such file" in low:
            return ErrorCode.SOURCE_MISSING
        if "no space left" in low:
            return ErrorCode.DISK_FULL
        return ErrorCode.DUMP_FAILED


if TYPE_CHECKING:  # static proof that every source satisfies the protocol

    def _conforms(
        a: PostgresSource,
        b: MySQLSource,
        c: SqliteSource,
        d: DirectorySource,
        e: PgGlobalsSource,
    ) -> list[DumpSource]:
        return [a, b, c, d, e]

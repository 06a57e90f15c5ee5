"""Dump sources: a database or directory description -> a command writing the dump to stdout.

A source probes what it needs through a :class:`~opscenter.remote.runner.CommandRunner`
(server version, which tool fits) and returns a :class:`DumpPlan` whose ``command``
writes the whole dump to stdout. Passwords never appear in argv: PostgreSQL gets
``PGPASSWORD`` in the environment, MySQL/MariaDB a 0600 ``--defaults-extra-file``
that the runner deletes after the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import re
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.remote.runner import Command, CommandRunner, LocalRunner, SecretFile

__all__ = [
    "PG_BIN_GLOBS",
    "DirectorySource",
    "DumpPlan",
    "DumpSource",
    "Engine",
    "MySQLConnection",
    "MySQLSource",
    "PgConnection",
    "PgGlobalsSource",
    "PgTool",
    "PostgresSource",
    "SqliteSource",
    "classify_mysql_error",
    "classify_pg_error",
    "find_pg_tools",
    "mysql_client_command",
    "pg_can_read_authid",
    "probe_mysql_server",
    "probe_pg_server",
    "psql_command",
    "quote_conninfo",
    "resolve_mysql_tool",
    "select_pg_tool",
]

#: Where versioned PostgreSQL client binaries live (Debian/Ubuntu, RHEL, Homebrew, source).
PG_BIN_GLOBS: tuple[str, ...] = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/pgsql/bin",
)
PROBE_TIMEOUT = 30.0


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


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True, slots=True)
class PgConnection:
    host: str
    database: str
    port: int = 5432
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None
    connect_timeout: int = 10

    def args(self) -> list[str]:
        # Connection parameters travel in the environment: a --dbname containing "="
        # would be parsed as a connection string, PGDATABASE never is.
        return ["--no-password"]

    def env(self) -> dict[str, str]:
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
            "PGCONNECT_TIMEOUT": str(self.connect_timeout),
            "PGAPPNAME": "opscenter",
        }
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        return env

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def with_database(self, database: str) -> PgConnection:
        return PgConnection(
            self.host,
            database,
            self.port,
            self.user,
            self.password,
            self.sslmode,
            self.connect_timeout,
        )


@dataclass(frozen=True, slots=True)
class PgTool:
    path: str
    major: int
    version: str  # first line of --version


_PG_AUTH = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "pg_hba.conf rejects",
    "no pg_hba.conf entry",
)
_PG_UNREACHABLE = (
    "could not connect",
    "connection refused",
    "timeout expired",
    "could not translate host name",
    "no route to host",
    "network is unreachable",
    "connection timed out",
    "server closed the connection unexpectedly",
    "the database system is starting up",
    "the database system is shutting down",
)


def classify_pg_error(stderr: str) -> ErrorCode | None:
    """Classify a libpq/pg_dump/pg_restore/psql error text, or ``None`` if unknown."""
    low = stderr.lower()
    # A missing login role fails the connection (FATAL); a missing role named by a
    # GRANT in the dump is an ordinary restore error (ERROR), not a credentials problem.
    if any(s in low for s in _PG_AUTH) or re.search(r'fatal:\s+role "[^"]*" does not exist', low):
        return ErrorCode.AUTH_FAILED
    if re.search(r'database "[^"]*" does not exist', low):
        return ErrorCode.DATABASE_MISSING
    if "server version mismatch" in low or "unsupported version" in low:
        return ErrorCode.TOOL_VERSION
    if "no space left on device" in low:
        return ErrorCode.DISK_FULL
    if any(s in low for s in _PG_UNREACHABLE):
        return ErrorCode.UNREACHABLE
    return None


def _parse_pg_version(text: str) -> tuple[int, str] | None:
    first = text.strip().splitlines()[0] if text.strip() else ""
    m = re.search(r"\)\s+(\d+)(?:\.(\d+))?", first) or re.search(r"(\d+)\.(\d+)", first)
    if not m:
        return None
    major = int(m.group(1))
    return major, first


async def find_pg_tools(
    runner: CommandRunner, name: str = "pg_dump", globs: tuple[str, ...] = PG_BIN_GLOBS
) -> list[PgTool]:
    """Every installed ``name`` (pg_dump, pg_restore, psql) with its major version."""
    paths: list[str] = []
    for pattern in globs:
        for bindir in await runner.glob(pattern):
            paths.append(f"{bindir.rstrip('/')}/{name}")
    on_path = await runner.which(name)
    # Debian's PATH entry is a Perl dispatcher into the very directories globbed above:
    # asking it for its version costs a Perl start and tells nothing new (asked only
    # if nothing else answers).
    wrapper = on_path if on_path and paths and _is_local_pg_wrapper(runner, on_path) else None
    if on_path and not wrapper:
        paths.append(on_path)
    paths = list(dict.fromkeys(paths))

    async def version_of(path: str) -> PgTool | None:
        try:
            res = await runner.run(Command((path, "--version")), limit_seconds=PROBE_TIMEOUT)
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            return None
        if res.returncode != 0:
            return None
        parsed = _parse_pg_version(res.stdout.decode("utf-8", "replace"))
        return PgTool(path, parsed[0], parsed[1]) if parsed else None

    # The candidates answer concurrently.
    tools = [t for t in await asyncio.gather(*map(version_of, paths)) if t is not None]
    if not tools and wrapper:
        tools = [t for t in [await version_of(wrapper)] if t is not None]
    # Newest first; on a tie prefer the versioned directory over the PATH wrapper.
    tools.sort(key=lambda t: (t.major, t.path != on_path), reverse=True)
    return tools


def _is_local_pg_wrapper(runner: CommandRunner, path: str) -> bool:
    """``path`` is postgresql-common's ``pg_wrapper`` on this machine."""
    return isinstance(runner, LocalRunner) and (
        os.path.basename(os.path.realpath(path)) == "pg_wrapper"
    )


async def select_pg_tool(
    runner: CommandRunner,
    name: str,
    server_major: int | None,
    globs: tuple[str, ...] = PG_BIN_GLOBS,
) -> PgTool:
    """The newest installed ``name`` whose major version is >= the server's."""
    return _newest_fitting(await find_pg_tools(runner, name, globs), name, server_major, globs)


def _newest_fitting(
    tools: list[PgTool], name: str, server_major: int | None, globs: tuple[str, ...]
) -> PgTool:
    if not tools:
        raise BackupError(
            ErrorCode.TOOL_MISSING,
            f"{name} is not installed (looked in {', '.join(globs)} and PATH)",
            stage="plan",
        )
    best = tools[0]
    if server_major is not None and best.major < server_major:
        found = ", ".join(sorted({f"{t.major}" for t in tools}))
        raise BackupError(
            ErrorCode.TOOL_VERSION,
            f"the server is PostgreSQL {server_major} but the newest installed {name} is "
            f"{best.major} (found: {found}); install the PostgreSQL {server_major} client "
            f"tools or newer",
            stage="plan",
        )
    return best


def quote_conninfo(value: str) -> str:
    """A libpq connection-string value, quoted (``dbname=`` + this is never re-parsed)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def psql_command(psql: str, conn: PgConnection, sql: str) -> Command:
    return Command(
        (
            psql,
            *conn.args(),
            "--no-psqlrc",
            "--no-align",
            "--tuples-only",
            "--field-separator=\t",
            "--set=ON_ERROR_STOP=1",
            "--command",
            sql,
        ),
        env=conn.env(),
        secrets=conn.secrets(),
    )


async def _find_psql(runner: CommandRunner, globs: tuple[str, ...]) -> str:
    tools = await find_pg_tools(runner, "psql", globs)
    if not tools:
        raise BackupError(ErrorCode.TOOL_MISSING, "psql is not installed", stage="probe")
    return tools[0].path


async def probe_pg_server(
    runner: CommandRunner, conn: PgConnection, *, globs: tuple[str, ...] = PG_BIN_GLOBS
) -> tuple[int, str]:
    """``(server_version_num, server_version)``; classified BackupError on failure."""
    psql = await _find_psql(runner, globs)
    try:
        res = await runner.run(
            psql_command(
                psql,
                conn,
                "select current_setting('server_version_num'), current_setting('server_version')",
            ),
            limit_seconds=conn.connect_timeout + PROBE_TIMEOUT,
        )
    except TimeoutError as exc:
        raise BackupError(
            ErrorCode.UNREACHABLE, f"PostgreSQL at {conn.host}:{conn.port} did not answer"
        ) from exc
    if res.returncode != 0:
        code = classify_pg_error(res.stderr) or ErrorCode.DUMP_FAILED
        raise BackupError(
            code,
            f"cannot query PostgreSQL {conn.host}:{conn.port}/{conn.database}",
            stage="probe",
            detail=res.stderr.strip()[-2000:],
        )
    num, _, ver = res.stdout.decode().strip().partition("\t")
    return int(num), ver


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
        tool = _newest_fitting(tools, "pg_dump", server_major, self.bin_globs)
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


async def pg_can_read_authid(runner: CommandRunner, psql: str, conn: PgConnection) -> bool:
    """Whether the account may read ``pg_authid`` (role passwords): superusers may."""
    sql = "select has_table_privilege('pg_catalog.pg_authid', 'SELECT')"
    try:
        res = await runner.run(
            psql_command(psql, conn, sql),
            limit_seconds=conn.connect_timeout + PROBE_TIMEOUT,
        )
    except TimeoutError as exc:
        raise BackupError(
            ErrorCode.UNREACHABLE, f"PostgreSQL at {conn.host}:{conn.port} did not answer"
        ) from exc
    if res.returncode != 0:
        raise BackupError(
            classify_pg_error(res.stderr) or ErrorCode.DUMP_FAILED,
            f"cannot query PostgreSQL {conn.host}:{conn.port}/{conn.database}",
            stage="globals",
            detail=res.stderr.strip()[-2000:],
        )
    return res.stdout.decode().strip() == "t"


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
                runner, await _find_psql(runner, self.bin_globs), self.conn
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


# --------------------------------------------------------------------------- MySQL / MariaDB


def _option_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass(frozen=True, slots=True)
class MySQLConnection:
    host: str
    database: str
    port: int = 3306
    user: str = "root"
    password: str | None = field(default=None, repr=False)
    connect_timeout: int = 10

    def defaults_file(self) -> SecretFile:
        lines = [
            "[client]",
            f"host={_option_value(self.host)}",
            f"port={self.port}",
            f"user={_option_value(self.user)}",
        ]
        if self.password is not None:
            lines.append(f"password={_option_value(self.password)}")
        return SecretFile("mysql-client", ("\n".join(lines) + "\n").encode())

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def with_database(self, database: str) -> MySQLConnection:
        return MySQLConnection(
            self.host, database, self.port, self.user, self.password, self.connect_timeout
        )


def classify_mysql_error(stderr: str) -> ErrorCode | None:
    low = stderr.lower()
    if "access denied for user" in low or "(1045)" in low or "(1698)" in low:
        return ErrorCode.AUTH_FAILED
    if "unknown database" in low or "(1049)" in low:
        return ErrorCode.DATABASE_MISSING
    if "no space left on device" in low or "errcode: 28" in low:
        return ErrorCode.DISK_FULL
    if any(
        s in low
        for s in (
            "can't connect to",
            "unknown mysql server host",
            "unknown server host",
            "lost connection to",
            "server has gone away",
            "(2002)",
            "(2003)",
            "(2005)",
            "(2013)",
        )
    ):
        return ErrorCode.UNREACHABLE
    return None


async def resolve_mysql_tool(runner: CommandRunner, names: tuple[str, ...]) -> tuple[str, str]:
    """``(path, version line)`` of the first of ``names`` installed."""
    for name in names:
        path = await runner.which(name)
        if path:
            res = await runner.run(Command((path, "--version")), limit_seconds=PROBE_TIMEOUT)
            return path, res.stdout.decode("utf-8", "replace").strip().splitlines()[0]
    raise BackupError(
        ErrorCode.TOOL_MISSING, f"none of {', '.join(names)} is installed", stage="plan"
    )


def mysql_client_command(client: str, conn: MySQLConnection, *args: str) -> Command:
    defaults = conn.defaults_file()
    return Command(
        (
            client,
            f"--defaults-extra-file={defaults.ref}",
            f"--connect-timeout={conn.connect_timeout}",
            "--default-character-set=utf8mb4",
            *args,
        ),
        secret_files=(defaults,),
        secrets=conn.secrets(),
    )


async def probe_mysql_server(runner: CommandRunner, conn: MySQLConnection) -> str:
    client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
    cmd = mysql_client_command(
        client, conn, "--batch", "--skip-column-names", "-e", "SELECT VERSION()", conn.database
    )
    try:
        res = await runner.run(cmd, limit_seconds=conn.connect_timeout + PROBE_TIMEOUT)
    except TimeoutError as exc:
        raise BackupError(
            ErrorCode.UNREACHABLE, f"MySQL at {conn.host}:{conn.port} did not answer"
        ) from exc
    if res.returncode != 0:
        raise BackupError(
            classify_mysql_error(res.stderr) or ErrorCode.DUMP_FAILED,
            f"cannot query MySQL {conn.host}:{conn.port}/{conn.database}",
            stage="probe",
            detail=res.stderr.strip()[-2000:],
        )
    return res.stdout.decode().strip()


@dataclass(frozen=True, slots=True)
class MySQLSource:
    """``mariadb-dump``/``mysqldump --single-transaction`` (consistent for InnoDB)."""

    conn: MySQLConnection
    extra_args: tuple[str, ...] = ()
    tools: tuple[str, ...] = ("mariadb-dump", "mysqldump")
    probe: bool = True
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

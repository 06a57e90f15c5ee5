"""PostgreSQL: finding the client tools, connections, classifying errors, quoting, probing.

No ORM: everything runs the real client (psql, pg_dump) through a `CommandRunner`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.remote.runner import (
    PROBE_TIMEOUT,
    Command,
    CommandRunner,
    LocalRunner,
    RunningCommand,
    read_lines_until,
    start_piped,
)


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings: only quotes double)."""
    return "'" + value.replace("'", "''") + "'"


def scram_sha_256(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677, as
    psql's \\password computes it): sent instead of the password, so the plain text never
    reaches the server's statement log. ``password`` must be ASCII (SASLprep is then the
    identity)."""
    if not password.isascii():
        raise ValueError("only ASCII passwords are hashed here")
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    stored = b64(hashlib.sha256(client_key).digest()).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${stored}:{b64(server_key).decode()}"


def set_password_sql(role: str, password: str) -> str:
    """Sets ``role``'s password (a role may set its own), as a SCRAM verifier."""
    return f"ALTER ROLE {quote_ident(role)} PASSWORD {quote_literal(scram_sha_256(password))}"


PG_BIN_GLOBS: tuple[str, ...] = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/pgsql/bin",
)


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
    return newest_fitting(await find_pg_tools(runner, name, globs), name, server_major, globs)


def newest_fitting(
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


async def find_psql(runner: CommandRunner, globs: tuple[str, ...]) -> str:
    tools = await find_pg_tools(runner, "psql", globs)
    if not tools:
        raise BackupError(ErrorCode.TOOL_MISSING, "psql is not installed", stage="probe")
    return tools[0].path


async def probe_pg_server(
    runner: CommandRunner, conn: PgConnection, *, globs: tuple[str, ...] = PG_BIN_GLOBS
) -> tuple[int, str]:
    """``(server_version_num, server_version)``; classified BackupError on failure."""
    psql = await find_psql(runner, globs)
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


def dump_pattern(schema: str, name: str) -> str:
    """A ``pg_dump --table`` pattern matching exactly ``schema.name`` (inside double
    quotes the pattern characters ``*``, ``?`` and ``.`` are literal)."""
    return f"{quote_ident(schema)}.{quote_ident(name)}"


_SNAPSHOT_END = "__opscenter_snapshot_listed__"
_USER_TABLES = (
    "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
    "where n.nspname not in ('pg_catalog', 'information_schema') "
    "and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%' "
)


class PgSnapshot:
    """A ``REPEATABLE READ`` transaction held open by a psql coprocess, its snapshot
    exported (``pg_export_snapshot()``) for several ``pg_dump --snapshot`` to share.

    It also takes ``ACCESS SHARE`` locks on every table (as the leader of ``pg_dump
    -j`` does), so no TRUNCATE or DROP slips in before each dump locks its own, and
    lists the tables whose data the dumps split: ``(pg_dump pattern, bytes)``,
    largest first, as seen by the snapshot. Extension member tables are left out:
    pg_dump decides about their data with their extension.
    """

    def __init__(self, proc: RunningCommand, stdin: int, snapshot_id: str) -> None:
        self._proc = proc
        self._stdin: int | None = stdin
        self.id = snapshot_id
        self.tables: list[tuple[str, int]] = []

    @classmethod
    async def export(
        cls, runner: CommandRunner, psql: str, conn: PgConnection, lock_timeout_ms: int
    ) -> PgSnapshot:
        command = Command(
            (
                psql,
                *conn.args(),
                "--no-psqlrc",
                "--quiet",
                "--no-align",
                "--tuples-only",
                "--field-separator=\t",
                "--set=ON_ERROR_STOP=1",
            ),
            env=conn.env(),
            secrets=conn.secrets(),
        )
        proc, in_w, out_r = await start_piped(runner, command)
        # Hex, so no name (tabs, newlines) can break the listing apart.
        script = (
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"  # noqa: S608 (an int, constants)
            "SELECT pg_export_snapshot();\n"
            f"SET LOCAL lock_timeout = {int(lock_timeout_ms)};\n"
            "SELECT format('LOCK TABLE %s IN ACCESS SHARE MODE', "
            "string_agg(c.oid::regclass::text, ', ')) "
            f"{_USER_TABLES} and c.relkind in ('r', 'p') having count(*) > 0 \\gexec\n"
            "SELECT encode(convert_to(n.nspname, 'UTF8'), 'hex'), "
            "encode(convert_to(c.relname, 'UTF8'), 'hex'), pg_table_size(c.oid) "
            f"{_USER_TABLES} and c.relkind = 'r' and not exists (select 1 from pg_depend d "
            "where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e') "
            "order by 3 desc, 1, 2;\n"
            f"\\echo {_SNAPSHOT_END}\n"
        )
        try:
            await asyncio.to_thread(os.write, in_w, script.encode())
            limit = PROBE_TIMEOUT + lock_timeout_ms / 1000
            reading = asyncio.to_thread(read_lines_until, out_r, _SNAPSHOT_END)
            lines = await asyncio.wait_for(reading, limit)
        except BaseException as exc:
            proc.kill()
            os.close(in_w)
            with contextlib.suppress(BaseException):
                await proc.wait()
            if isinstance(exc, (OSError, TimeoutError)):
                raise BackupError(
                    ErrorCode.DUMP_FAILED,
                    f"could not export a snapshot: {exc!r}",
                    stage="snapshot",
                    detail=proc.stderr_tail(),
                ) from None
            raise
        finally:
            os.close(out_r)
        if not lines or lines[-1] != _SNAPSHOT_END:
            os.close(in_w)
            await proc.wait()
            stderr = proc.stderr_tail()
            raise BackupError(
                classify_pg_error(stderr) or ErrorCode.DUMP_FAILED,
                "could not export a snapshot for the parallel dump",
                stage="snapshot",
                detail=stderr,
            )
        snapshot = cls(proc, in_w, lines[0])
        for line in lines[1:-1]:
            schema, name, size = line.split("\t")
            snapshot.tables.append(
                (
                    dump_pattern(bytes.fromhex(schema).decode(), bytes.fromhex(name).decode()),
                    int(size),
                )
            )
        return snapshot

    async def close(self) -> None:
        """End the transaction (nothing was written) and the coprocess."""
        fd, self._stdin = self._stdin, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.write(fd, b"ROLLBACK;\n")
        finally:
            os.close(fd)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._proc.wait()
        except BaseException:
            self._proc.kill()
            raise


def split_by_size(tables: list[tuple[str, int]], groups: int) -> list[list[str]]:
    """Tables in ``groups`` lists of about equal total size: largest first, each to the
    lightest list so far (ties: the first). Lists may be empty."""
    bins: list[list[str]] = [[] for _ in range(groups)]
    loads = [0] * groups
    for name, size in sorted(tables, key=lambda t: -t[1]):
        i = loads.index(min(loads))
        bins[i].append(name)
        loads[i] += max(size, 1)
    return bins

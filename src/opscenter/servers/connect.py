"""Reaching a server: connection tests and database discovery, through the same client
tools and command runner the backups use, so a green test means a backup can connect."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from opscenter.backups.errors import BackupError, ErrorCode
from opscenter.backups.runner import CommandRunner, LocalRunner
from opscenter.backups.sources import (
    MySQLConnection,
    PgConnection,
    mysql_client_command,
    probe_mysql_server,
    probe_pg_server,
    psql_command,
    resolve_mysql_tool,
    select_pg_tool,
)
from opscenter.servers.schemas import DEFAULT_PORTS, ServerType

SQLITE_MAGIC = b"SQLite format 3\x00"
CONNECT_TIMEOUT = 10

HINTS = {
    ErrorCode.AUTH_FAILED: "check the username and password in the server's credentials",
    ErrorCode.UNREACHABLE: "check that the server runs, that host and port are right and "
    "that no firewall blocks this host",
    ErrorCode.DATABASE_MISSING: "check the database name",
    ErrorCode.TOOL_MISSING: "install the database client tools on the opscenter host",
    ErrorCode.TOOL_VERSION: "install a client at least as new as the server",
    ErrorCode.SOURCE_MISSING: "check that the paths exist and are readable by opscenter",
}


@dataclass(frozen=True)
class Target:
    """What it takes to reach a server, with its secrets decrypted (never persisted)."""

    type: ServerType
    host: str
    port: int | None
    paths: tuple[str, ...]
    username: str | None
    password: str | None

    def pg(self, database: str = "postgres") -> PgConnection:
        return PgConnection(
            host=self.host,
            database=database,
            port=self.port or DEFAULT_PORTS[ServerType.POSTGRESQL],
            user=self.username or "postgres",
            password=self.password,
            connect_timeout=CONNECT_TIMEOUT,
        )

    def mysql(self, database: str = "information_schema") -> MySQLConnection:
        return MySQLConnection(
            host=self.host,
            database=database,
            port=self.port or DEFAULT_PORTS[ServerType.MYSQL],
            user=self.username or "root",
            password=self.password,
            connect_timeout=CONNECT_TIMEOUT,
        )


@dataclass(frozen=True)
class Probe:
    success: bool
    message: str
    latency_ms: int
    code: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Database:
    name: str
    size_bytes: int
    type: str


def explain(err: BackupError) -> str:
    """A message a person can act on: what failed, the tool's own words, what to do."""
    first_line = next((ln for ln in err.detail.splitlines() if ln.strip()), "")
    text = err.message + (f" ({first_line.strip()[:300]})" if first_line else "")
    hint = HINTS.get(err.code)
    return f"{text}; {hint}" if hint else text


async def probe(target: Target, runner: CommandRunner | None = None) -> Probe:
    runner = runner or LocalRunner()
    started = time.perf_counter()

    def elapsed() -> int:
        return round((time.perf_counter() - started) * 1000)

    try:
        version = await _version(target, runner)
    except BackupError as err:
        return Probe(False, explain(err), elapsed(), code=err.code.value)
    return Probe(True, f"Connection successful: {version}", elapsed(), version=version)


async def _version(target: Target, runner: CommandRunner) -> str:
    if target.type == ServerType.POSTGRESQL:
        conn = target.pg()
        num, version = await probe_pg_server(runner, conn)
        await select_pg_tool(runner, "pg_dump", num // 10000)  # a usable pg_dump is part of "works"
        return f"PostgreSQL {version}"
    if target.type == ServerType.MYSQL:
        return f"MySQL/MariaDB {await probe_mysql_server(runner, target.mysql())}"
    return await asyncio.to_thread(_check_local_paths, target)


def _check_local_paths(target: Target) -> str:
    if target.type == ServerType.SQLITE:
        for path in target.paths:
            _check_sqlite_file(path)
        return f"{len(target.paths)} SQLite database file(s) readable"
    missing = [p for p in target.paths if not os.path.exists(p)]
    if missing:
        raise BackupError(ErrorCode.SOURCE_MISSING, f"paths not found: {', '.join(missing)}")
    return "local host reachable"


def _check_sqlite_file(path: str) -> None:
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise BackupError(ErrorCode.SOURCE_MISSING, f"cannot read {path}: {exc.strerror}") from None
    if header != SQLITE_MAGIC:
        raise BackupError(ErrorCode.SOURCE_MISSING, f"{path} is not an SQLite database")


PG_DATABASES_SQL = (
    "select datname, pg_database_size(datname) from pg_database "
    "where not datistemplate and datallowconn order by datname"
)
MYSQL_DATABASES_SQL = (
    "SELECT s.schema_name, COALESCE(SUM(t.data_length + t.index_length), 0) "
    "FROM information_schema.schemata s LEFT JOIN information_schema.tables t "
    "ON t.table_schema = s.schema_name WHERE s.schema_name NOT IN "
    "('information_schema', 'performance_schema', 'mysql', 'sys') "
    "GROUP BY s.schema_name ORDER BY s.schema_name"
)


async def list_databases(target: Target, runner: CommandRunner | None = None) -> list[Database]:
    """Read from the server itself. Raises BackupError (classified) when it can't."""
    runner = runner or LocalRunner()
    if target.type == ServerType.POSTGRESQL:
        conn = target.pg()
        num, _ = await probe_pg_server(runner, conn)
        psql = (await select_pg_tool(runner, "psql", num // 10000)).path
        res = await runner.run(psql_command(psql, conn, PG_DATABASES_SQL), limit_seconds=60)
        return [
            Database(n, s, "postgresql") for n, s in _rows(res.returncode, res.stdout, res.stderr)
        ]
    if target.type == ServerType.MYSQL:
        client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
        cmd = mysql_client_command(
            client, target.mysql(), "--batch", "--skip-column-names", "-e", MYSQL_DATABASES_SQL
        )
        res = await runner.run(cmd, limit_seconds=60)
        return [Database(n, s, "mysql") for n, s in _rows(res.returncode, res.stdout, res.stderr)]
    return await asyncio.to_thread(_local_databases, target)


def _local_databases(target: Target) -> list[Database]:
    if target.type == ServerType.SQLITE:
        found = []
        for path in target.paths:
            _check_sqlite_file(path)
            found.append(Database(path, os.path.getsize(path), "sqlite"))
        return found
    return [Database(p, _tree_size(p), "files") for p in target.paths if os.path.exists(p)]


def _rows(returncode: int, stdout: bytes, stderr: str) -> list[tuple[str, int]]:
    if returncode != 0:
        raise BackupError(ErrorCode.DUMP_FAILED, "listing databases failed", detail=stderr)
    rows = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        name, _, size = line.partition("\t")
        rows.append((name, int(size or 0)))
    return rows


def _tree_size(path: str, limit: int = 200_000) -> int:
    """Bytes under a path, giving up (with the partial sum) after `limit` entries."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for seen, (root, _dirs, files) in enumerate(os.walk(path)):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
        if seen > limit:
            break
    return total


async def database_state(target: Target, name: str, runner: CommandRunner | None = None) -> str:
    """`missing`, `empty` or `non_empty`: what a restore into `name` would meet."""
    runner = runner or LocalRunner()
    if target.type == ServerType.POSTGRESQL:
        num, _ = await probe_pg_server(runner, target.pg())
        psql = (await select_pg_tool(runner, "psql", num // 10000)).path
        exists = await runner.run(
            psql_command(
                psql, target.pg(), f"select 1 from pg_database where datname = {pg_literal(name)}"
            ),
            limit_seconds=60,
        )
        if not _rows_text(exists.returncode, exists.stdout, exists.stderr):
            return "missing"
        count = await runner.run(
            psql_command(psql, target.pg(name), PG_RELATIONS_SQL), limit_seconds=60
        )
        return (
            "non_empty"
            if int(_rows_text(count.returncode, count.stdout, count.stderr) or 0)
            else "empty"
        )
    if target.type == ServerType.MYSQL:
        client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
        literal = mysql_literal(name)
        sql = (
            "SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA "
            f"WHERE SCHEMA_NAME = {literal}), (SELECT COUNT(*) FROM information_schema.TABLES "
            f"WHERE TABLE_SCHEMA = {literal})"
        )
        res = await runner.run(
            mysql_client_command(
                client, target.mysql(), "--batch", "--skip-column-names", "-e", sql
            ),
            limit_seconds=60,
        )
        schemas, _, tables = _rows_text(res.returncode, res.stdout, res.stderr).partition("\t")
        if not int(schemas or 0):
            return "missing"
        return "non_empty" if int(tables or 0) else "empty"
    return await asyncio.to_thread(_path_state, name)


PG_RELATIONS_SQL = (
    "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
    "where c.relkind in ('r','v','m','S','f','p') "
    "and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%'"
)


def pg_literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings: only quotes double)."""
    return "'" + value.replace("'", "''") + "'"


def mysql_literal(value: str) -> str:
    """A MySQL/MariaDB string literal (backslash is an escape there)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _rows_text(returncode: int, stdout: bytes, stderr: str) -> str:
    if returncode != 0:
        raise BackupError(ErrorCode.DUMP_FAILED, "inspecting the target failed", detail=stderr)
    return stdout.decode("utf-8", "replace").strip()


def _path_state(path: str) -> str:
    if not os.path.exists(path):
        return "missing"
    if os.path.isdir(path):
        return "non_empty" if os.listdir(path) else "empty"
    return "non_empty" if os.path.getsize(path) else "empty"

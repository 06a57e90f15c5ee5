"""Reaching a server: connection tests and database discovery, through the same client
tools and command runner the backups use, so a green test means a backup can connect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines import mysql, postgres
from opscenter.engines.mysql import (
    MySQLConnection,
    mysql_client_command,
    probe_mysql_server,
    resolve_mysql_tool,
)
from opscenter.engines.postgres import PgConnection, probe_pg_server, psql_command, select_pg_tool
from opscenter.remote.docker import DockerRunner
from opscenter.remote.runner import Command, CommandRunner, LocalRunner
from opscenter.remote.ssh import HostKeyInfo, SshConfig, SshRunner
from opscenter.servers.schemas import DEFAULT_PORTS, HOSTS, ServerType, over_ssh

SQLITE_MAGIC = b"SQLite format 3\x00"
CONNECT_TIMEOUT = 10

HINTS = {
    ErrorCode.AUTH_FAILED: "check the username and password in the server's credentials",
    ErrorCode.PERMISSION_DENIED: "grant the server's user the privilege named above, or "
    "restore into a database it may use",
    ErrorCode.UNREACHABLE: "check that the server runs, that host and port are right and "
    "that no firewall blocks this host",
    ErrorCode.DATABASE_MISSING: "check the database name",
    ErrorCode.TOOL_MISSING: "install the database client tools on the opscenter host",
    ErrorCode.TOOL_VERSION: "install a client at least as new as the server",
    ErrorCode.SOURCE_MISSING: "check that the paths exist and are readable by opscenter",
}


@dataclass(frozen=True)
class Target:
    """What it takes to reach a server, with its secrets decrypted (never persisted).

    A `postgresql`/`mysql` server is the database itself, reached from here. A `local` or
    `ssh` host, or a `docker` container, runs its tools there: its database (`db_engine`,
    on `db_port`) is reached as 127.0.0.1 from there, with `db_username`/`db_password`.
    """

    type: ServerType
    host: str
    port: int | None
    paths: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None
    ssh_key: str | None = None
    host_key: str | None = None
    db_engine: str | None = None
    db_port: int | None = None
    db_username: str | None = None
    db_password: str | None = None
    container: str | None = None

    @property
    def is_host(self) -> bool:
        return self.type in HOSTS

    def engine(self, requested: str | None = None) -> str:
        """The engine of an operation: fixed for database servers, chosen on hosts."""
        if self.type in (ServerType.POSTGRESQL, ServerType.MYSQL, ServerType.SQLITE):
            return self.type.value
        return requested or self.db_engine or "files"

    def _db(self, engine: ServerType) -> tuple[str, int, str | None, str | None]:
        if self.type == engine:
            return self.host, self.port or DEFAULT_PORTS[engine], self.username, self.password
        return (
            "127.0.0.1",
            self.db_port or DEFAULT_PORTS[engine],
            self.db_username,
            self.db_password,
        )

    def pg(self, database: str = "postgres") -> PgConnection:
        host, port, user, password = self._db(ServerType.POSTGRESQL)
        return PgConnection(
            host=host,
            database=database,
            port=port,
            user=user or "postgres",
            password=password,
            connect_timeout=CONNECT_TIMEOUT,
        )

    def mysql(self, database: str = "information_schema") -> MySQLConnection:
        host, port, user, password = self._db(ServerType.MYSQL)
        return MySQLConnection(
            host=host,
            database=database,
            port=port,
            user=user or "root",
            password=password,
            connect_timeout=CONNECT_TIMEOUT,
        )

    @property
    def over_ssh(self) -> bool:
        return over_ssh(self.type, self.host)

    def ssh(self) -> SshConfig:
        return SshConfig(
            host=self.host,
            port=self.port or 22,
            username=self.username or "root",
            password=self.password,
            private_key=self.ssh_key,
            host_key=self.host_key,
        )


@dataclass(frozen=True)
class Probe:
    success: bool
    message: str
    latency_ms: int
    code: str | None = None
    version: str | None = None
    host_key: HostKeyInfo | None = None


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


@asynccontextmanager
async def open_runner(target: Target) -> AsyncIterator[CommandRunner]:
    """Where the tools run: this host, the SSH host (one connection, closed after), or a
    container on either."""
    host: CommandRunner = SshRunner(target.ssh()) if target.over_ssh else LocalRunner()
    try:
        if target.type == ServerType.DOCKER:
            assert target.container
            yield DockerRunner(host, target.container)
        else:
            yield host
    finally:
        if isinstance(host, SshRunner):
            await host.close()


def ssh_of(runner: CommandRunner) -> SshRunner | None:
    """The SSH connection under a runner, if any (its host key is checked and pinned)."""
    if isinstance(runner, DockerRunner):
        runner = runner.host
    return runner if isinstance(runner, SshRunner) else None


async def probe(target: Target) -> Probe:
    started = time.perf_counter()

    def elapsed() -> int:
        return round((time.perf_counter() - started) * 1000)

    host_key: HostKeyInfo | None = None
    try:
        async with open_runner(target) as runner:
            if (ssh := ssh_of(runner)) is not None:
                host_key = await ssh.connect()
            version = await _version(target, runner)
    except BackupError as err:
        return Probe(False, explain(err), elapsed(), code=err.code.value, host_key=host_key)
    return Probe(
        True, f"Connection successful: {version}", elapsed(), version=version, host_key=host_key
    )


async def _version(target: Target, runner: CommandRunner) -> str:
    parts = [f"SSH {target.username or 'root'}@{target.host}"] if target.over_ssh else []
    if target.type == ServerType.DOCKER:
        parts.append(f"container {target.container}")
    engine = target.engine()
    if engine == "postgresql":
        num, version = await probe_pg_server(runner, target.pg())
        await select_pg_tool(runner, "pg_dump", num // 10000)  # a usable pg_dump is part of "works"
        parts.append(f"PostgreSQL {version}")
    elif engine == "mysql":
        parts.append(f"MySQL/MariaDB {await probe_mysql_server(runner, target.mysql())}")
    elif target.type == ServerType.SQLITE:
        for path in target.paths:
            await _check_sqlite_file(runner, path)
        parts.append(f"{len(target.paths)} SQLite database file(s) readable")
    missing = [p for p in target.paths if not await _exists(runner, p)]
    if missing:
        raise BackupError(ErrorCode.SOURCE_MISSING, f"paths not found: {', '.join(missing)}")
    if target.is_host and target.paths:
        parts.append(f"{len(target.paths)} path(s) present")
    return ", ".join(parts) or "local host reachable"


async def _exists(runner: CommandRunner, path: str) -> bool:
    return (await runner.run(Command(("test", "-e", path)), limit_seconds=30)).returncode == 0


async def _check_sqlite_file(runner: CommandRunner, path: str) -> None:
    res = await runner.run(
        Command(("head", "-c", str(len(SQLITE_MAGIC)), "--", path)), limit_seconds=30
    )
    if res.returncode != 0:
        raise BackupError(ErrorCode.SOURCE_MISSING, f"cannot read {path}", detail=res.stderr)
    if res.stdout != SQLITE_MAGIC:
        raise BackupError(ErrorCode.SOURCE_MISSING, f"{path} is not an SQLite database")


async def _size(runner: CommandRunner, path: str) -> int:
    res = await runner.run(Command(("du", "-sb", "--", path)), limit_seconds=120)
    head = res.stdout.decode("utf-8", "replace").split("\t", 1)[0]
    return int(head) if res.returncode == 0 and head.isdigit() else 0


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


async def list_databases(target: Target) -> list[Database]:
    """Read from the server itself. Raises BackupError (classified) when it can't."""
    found: list[Database] = []
    async with open_runner(target) as runner:
        engine = target.engine()
        if engine in ("postgresql", "mysql"):
            sizes = await _engine_sizes(runner, target, engine)
            found += [Database(n, s, engine) for n, s in sizes]
        for path in target.paths:
            if path == "/":  # the whole host ('this host'): no suggestion, and sizing it
                continue  # would walk every directory
            if target.type == ServerType.SQLITE:
                await _check_sqlite_file(runner, path)
            elif not await _exists(runner, path):
                continue
            kind = "sqlite" if target.type == ServerType.SQLITE else "files"
            found.append(Database(path, await _size(runner, path), kind))
    return found


async def _engine_sizes(
    runner: CommandRunner, target: Target, engine: str
) -> list[tuple[str, int]]:
    if engine == "postgresql":
        conn = target.pg()
        num, _ = await probe_pg_server(runner, conn)
        psql = (await select_pg_tool(runner, "psql", num // 10000)).path
        res = await runner.run(psql_command(psql, conn, PG_DATABASES_SQL), limit_seconds=60)
        return _rows(res.returncode, res.stdout, res.stderr)
    client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
    cmd = mysql_client_command(
        client, target.mysql(), "--batch", "--skip-column-names", "-e", MYSQL_DATABASES_SQL
    )
    res = await runner.run(cmd, limit_seconds=60)
    return _rows(res.returncode, res.stdout, res.stderr)


#: How long a dump's size estimate may take: a table locked by another session blocks the
#: MySQL catalogue's answer, and the backup must not wait on its progress bar.
SIZE_ESTIMATE_SECONDS = 5.0


async def size_of(runner: CommandRunner, target: Target, engine: str, name: str) -> int | None:
    """The size of one database or path as the server reports it, to estimate a dump's
    progress; None when unknown or slow (only an estimate: never fail or hold a backup
    over it)."""
    try:
        async with asyncio.timeout(SIZE_ESTIMATE_SECONDS):
            if engine in ("postgresql", "mysql"):
                return dict(await _engine_sizes(runner, target, engine)).get(name) or None
            return await _size(runner, name) or None
    except Exception:  # whatever the transport raised, or too slow: the backup will tell
        return None


def _rows(returncode: int, stdout: bytes, stderr: str) -> list[tuple[str, int]]:
    if returncode != 0:
        raise BackupError(ErrorCode.DUMP_FAILED, "listing databases failed", detail=stderr)
    rows = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        name, _, size = line.partition("\t")
        rows.append((name, int(size or 0)))
    return rows


async def database_state(target: Target, name: str, engine: str) -> str:
    """`missing`, `empty` or `non_empty`: what a restore into `name` would meet."""
    async with open_runner(target) as runner:
        if engine == "postgresql":
            num, _ = await probe_pg_server(runner, target.pg())
            psql = (await select_pg_tool(runner, "psql", num // 10000)).path
            sql = f"select 1 from pg_database where datname = {postgres.quote_literal(name)}"
            exists = await runner.run(psql_command(psql, target.pg(), sql), limit_seconds=60)
            if not _rows_text(exists.returncode, exists.stdout, exists.stderr):
                return "missing"
            count = await runner.run(
                psql_command(psql, target.pg(name), PG_RELATIONS_SQL), limit_seconds=60
            )
            relations = int(_rows_text(count.returncode, count.stdout, count.stderr) or 0)
            return "non_empty" if relations else "empty"
        if engine == "mysql":
            client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
            literal = mysql.quote_literal(name)
            sql = (
                "SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA "
                f"WHERE SCHEMA_NAME = {literal}), (SELECT COUNT(*) FROM information_schema.TABLES "
                f"WHERE TABLE_SCHEMA = {literal})"
            )
            cmd = mysql_client_command(
                client, target.mysql(), "--batch", "--skip-column-names", "-e", sql
            )
            res = await runner.run(cmd, limit_seconds=60)
            schemas, _, tables = _rows_text(res.returncode, res.stdout, res.stderr).partition("\t")
            if not int(schemas or 0):
                return "missing"
            return "non_empty" if int(tables or 0) else "empty"
        if not await _exists(runner, name):
            return "missing"
        listing = await runner.run(
            Command(("find", name, "-maxdepth", "1", "-mindepth", "1")), limit_seconds=60
        )
        is_file = (
            await runner.run(Command(("test", "-f", name)), limit_seconds=30)
        ).returncode == 0
        if is_file:
            return "non_empty" if await _size(runner, name) else "empty"
        return "non_empty" if listing.stdout.strip() else "empty"


PG_RELATIONS_SQL = (
    "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
    "where c.relkind in ('r','v','m','S','f','p') "
    "and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%'"
)


def _rows_text(returncode: int, stdout: bytes, stderr: str) -> str:
    if returncode != 0:
        raise BackupError(ErrorCode.DUMP_FAILED, "inspecting the target failed", detail=stderr)
    return stdout.decode("utf-8", "replace").strip()

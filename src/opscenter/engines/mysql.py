"""MySQL and MariaDB: finding the client tools, connections, classifying errors, quoting,
probing.

No ORM: everything runs the real client (mysql, mariadb-dump) through a `CommandRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.remote.runner import (
    PROBE_TIMEOUT,
    Command,
    CommandRunner,
    RunningCommand,
    SecretFile,
    read_lines_until,
    start_piped,
)


def quote_ident(name: str) -> str:
    """A MySQL/MariaDB identifier, backquoted."""
    return "`" + name.replace("`", "``") + "`"


def quote_literal(value: str) -> str:
    """A MySQL/MariaDB string literal (backslash is an escape there)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def set_password_sql(user: str, host: str, password: str, *, mariadb: bool) -> str:
    """Sets the account ``user@host``'s password. MariaDB lets an account without the
    CREATE USER privilege change its own password only with SET PASSWORD; MySQL 8 has no
    PASSWORD() any more, and there an account may ALTER USER itself."""
    account = f"{quote_ident(user)}@{quote_ident(host)}"
    if mariadb:
        return f"SET PASSWORD FOR {account} = PASSWORD({quote_literal(password)})"
    return f"ALTER USER {account} IDENTIFIED BY {quote_literal(password)}"


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


_MYSQL_PRIVILEGE = re.compile(r"error:? (1044|1142|1143|1227)\b|command denied")


def classify_mysql_error(stderr: str) -> ErrorCode | None:
    low = stderr.lower()
    if "(1045)" in low or "(1698)" in low:
        return ErrorCode.AUTH_FAILED
    # 1044: no privilege on the database, 1142/1143: on a table or column, 1227: SUPER.
    if _MYSQL_PRIVILEGE.search(low):
        return ErrorCode.PERMISSION_DENIED
    if "access denied for user" in low:
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


def mysql_client_command(
    client: str, conn: MySQLConnection, *args: str, database: str | None = None
) -> Command:
    """The client with the connection's options; ``database`` goes in ``--database=``, so a
    name such as ``--tee=/x`` or ``-P1`` is a name, never an option."""
    defaults = conn.defaults_file()
    return Command(
        (
            client,
            f"--defaults-extra-file={defaults.ref}",
            f"--connect-timeout={conn.connect_timeout}",
            "--default-character-set=utf8mb4",
            *args,
            *((f"--database={database}",) if database else ()),
        ),
        secret_files=(defaults,),
        secrets=conn.secrets(),
    )


async def probe_mysql_server(runner: CommandRunner, conn: MySQLConnection) -> str:
    client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
    cmd = mysql_client_command(
        client,
        conn,
        "--batch",
        "--skip-column-names",
        "-e",
        "SELECT VERSION()",
        database=conn.database,
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


_LOCK_END = "__opscenter_lock_done__"


class MySQLReadLock:
    """``FLUSH TABLES WITH READ LOCK`` held by a client coprocess while the dumps of a
    parallel backup open their ``--single-transaction`` snapshots: no write lands
    between the first snapshot and the last, so they all see the same instant.

    It lists the database's base tables (name, data bytes), largest first, for the
    dumps to split, and refuses tables of another engine than InnoDB, which a
    snapshot does not cover. :meth:`release_when_begun` unlocks as soon as the dumps
    hold their transactions; the lock is never held longer than ``hold_limit``
    seconds.
    """

    def __init__(
        self, proc: RunningCommand, stdin: int, stdout: int, thread_id: int, hold_limit: float
    ) -> None:
        self._proc = proc
        self._stdin: int | None = stdin
        self._stdout = stdout
        self._thread_id = thread_id
        self._hold_limit = hold_limit
        self._deadline = time.monotonic() + hold_limit
        self.tables: list[tuple[str, int]] = []

    @classmethod
    async def take(
        cls, runner: CommandRunner, client: str, conn: MySQLConnection, hold_limit: float
    ) -> MySQLReadLock:
        command = mysql_client_command(
            client,
            conn,
            "--batch",
            "--skip-column-names",
            "--unbuffered",
            database=conn.database,
        )
        proc, in_w, out_r = await start_piped(runner, command)
        lock = cls(proc, in_w, out_r, 0, hold_limit)
        # Hex, so no name (tabs, newlines) can break the listing apart.
        lines = await lock._ask(
            f"SET SESSION lock_wait_timeout = {max(1, int(hold_limit))};\n"
            "FLUSH TABLES WITH READ LOCK;\n"
            "SELECT CONNECTION_ID();\n"
            "SELECT HEX(TABLE_NAME), COALESCE(DATA_LENGTH, 0), COALESCE(ENGINE, '') "
            "FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_TYPE = 'BASE TABLE' ORDER BY 2 DESC, 1;\n",
            "could not lock the tables for the parallel dump",
        )
        lock._thread_id = int(lines[0])
        other: list[str] = []
        for line in lines[1:]:
            name_hex, size, engine = line.split("\t")
            name = bytes.fromhex(name_hex).decode()
            lock.tables.append((name, int(size)))
            if engine.lower() != "innodb":
                other.append(f"{name} ({engine})")
        if other:
            await lock.close()
            raise BackupError(
                ErrorCode.INVALID_CONFIG,
                "a parallel backup needs InnoDB tables (one snapshot covers only them); "
                f"not InnoDB: {', '.join(other[:10])}. Use one stream for this database",
                stage="snapshot",
            )
        return lock

    async def _ask(self, script: str, what: str) -> list[str]:
        """Run ``script`` in the locking session; its output lines (without the end
        marker). Fails (and ends the session) on any error or past the deadline."""
        assert self._stdin is not None
        script += f"SELECT '{_LOCK_END}';\n"
        try:
            async with asyncio.timeout(max(0.0, self._deadline - time.monotonic())):
                await asyncio.to_thread(os.write, self._stdin, script.encode())
                lines = await asyncio.to_thread(read_lines_until, self._stdout, _LOCK_END)
        except BaseException as exc:
            await self._end(kill=True)
            if isinstance(exc, (OSError, TimeoutError)):
                why = f"{exc!r}" if isinstance(exc, OSError) else "the read lock took too long"
                raise BackupError(
                    ErrorCode.DUMP_FAILED,
                    f"{what} ({why}; the limit is {self._hold_limit:g} s)",
                    stage="snapshot",
                    detail=self._proc.stderr_tail(),
                ) from None
            raise
        if not lines or lines[-1] != _LOCK_END:
            await self._end(kill=False)
            stderr = self._proc.stderr_tail()
            raise BackupError(
                classify_mysql_error(stderr) or ErrorCode.DUMP_FAILED,
                what,
                stage="snapshot",
                detail=stderr,
            )
        return lines[:-1]

    async def release_when_begun(
        self, dumps: int, ended: Callable[[], int], poll: float = 0.02
    ) -> None:
        """``UNLOCK TABLES`` once ``dumps`` connections opened after the lock (and as
        the same user) hold a transaction, or ended (``ended()`` of them): each dump
        has its snapshot."""
        count = (
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX t "  # noqa: S608 (an int)
            "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
            f"WHERE p.ID > {self._thread_id} "
            "AND p.USER = SUBSTRING_INDEX(USER(), '@', 1);\n"
        )
        what = "the dumps did not open their snapshots under the read lock"
        # Polled: the server tells nobody when a session begins a transaction.
        while int((await self._ask(count, what))[0]) + ended() < dumps:  # noqa: ASYNC110
            await asyncio.sleep(poll)
        await self._ask("UNLOCK TABLES;\n", "could not unlock the tables")

    async def close(self) -> None:
        """End the session (which releases the lock if it is still held)."""
        await self._end(kill=False)

    async def _end(self, *, kill: bool) -> None:
        fd, self._stdin = self._stdin, None
        if fd is None:
            return
        os.close(fd)
        os.close(self._stdout)
        if kill:
            self._proc.kill()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._proc.wait()
        except BaseException:
            self._proc.kill()
            with contextlib.suppress(BaseException):
                await self._proc.wait()
            raise

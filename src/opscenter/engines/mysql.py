"""MySQL and MariaDB: finding the client tools, connections, classifying errors, quoting,
probing.

No ORM: everything runs the real client (mysql, mariadb-dump) through a `CommandRunner`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.remote.runner import PROBE_TIMEOUT, Command, CommandRunner, SecretFile


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

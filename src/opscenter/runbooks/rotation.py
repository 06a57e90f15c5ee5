"""The `rotate_password` step: a new strong password for a server's database login, set on
the database, proven by a fresh login, and only then stored (encrypted) in opscenter.

In that order, so a failure leaves a state someone can act on: if the change is refused,
the old password still works and is still stored; if the new one cannot log in, the step
says so and stores nothing (the database's own error is kept, secrets masked).
"""

from __future__ import annotations

import dataclasses
import secrets
import string

from opscenter.core.failures import BackupError, scrub
from opscenter.engines import mysql, postgres
from opscenter.remote.runner import PROBE_TIMEOUT, CommandRunner
from opscenter.servers import connect

ALPHABET = string.ascii_letters + string.digits
#: 32 characters of 62: about 190 bits, and no character any client could misread.
LENGTH = 32
ENGINES = ("postgresql", "mysql")


class RotationFailed(Exception):
    """A message for the step's record, free of secrets."""


def new_password(length: int = LENGTH) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _said(stderr: str, secret: tuple[str, ...]) -> str:
    first = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "no message")
    return scrub(first, secret)[:300]


async def _pg(runner: CommandRunner, target: connect.Target, password: str) -> str:
    conn = target.pg()
    psql = await postgres.find_psql(runner, postgres.PG_BIN_GLOBS)
    sql = postgres.set_password_sql(conn.user, password)
    res = await runner.run(postgres.psql_command(psql, conn, sql), limit_seconds=PROBE_TIMEOUT)
    hide = (password, *conn.secrets())
    if res.returncode != 0:
        raise RotationFailed(
            f"PostgreSQL refused to change the password of {conn.user!r} "
            f"({_said(res.stderr, hide)}); nothing changed: the stored password still works"
        )
    fresh = dataclasses.replace(conn, password=password)
    check = await runner.run(postgres.psql_command(psql, fresh, "SELECT 1"), limit_seconds=30)
    if check.returncode != 0 or check.stdout.strip() != b"1":
        raise _unproven(conn.user, _said(check.stderr, hide))
    return conn.user


async def _mysql(runner: CommandRunner, target: connect.Target, password: str) -> str:
    conn = target.mysql()
    client, _ = await mysql.resolve_mysql_tool(runner, ("mariadb", "mysql"))
    hide = (password, *conn.secrets())

    async def query(c: mysql.MySQLConnection, sql: str) -> tuple[int, str, str]:
        # The statement goes on stdin: a password in argv would show in `ps` on the host.
        command = mysql.mysql_client_command(client, c, "--batch", "--skip-column-names")
        res = await runner.run(command, input=sql.encode(), limit_seconds=PROBE_TIMEOUT)
        return res.returncode, res.stdout.decode("utf-8", "replace").strip(), res.stderr

    rc, out, err = await query(conn, "SELECT CURRENT_USER(), VERSION();")
    if rc != 0:
        raise RotationFailed(
            f"cannot log in as {conn.user!r} ({_said(err, hide)}); nothing changed"
        )
    account, _, version = out.partition("\t")
    user, _, host = account.rpartition("@")
    sql = mysql.set_password_sql(user, host, password, mariadb="mariadb" in version.lower())
    rc, _, err = await query(conn, sql + ";")
    if rc != 0:
        raise RotationFailed(
            f"the database refused to change the password of {account!r} "
            f"({_said(err, hide)}); nothing changed: the stored password still works"
        )
    rc, out, err = await query(dataclasses.replace(conn, password=password), "SELECT 1;")
    if rc != 0 or out != "1":
        raise _unproven(account, _said(err, hide))
    return account


def _unproven(user: str, said: str) -> RotationFailed:
    return RotationFailed(
        f"the password of {user!r} was changed, but a login with the new one failed ({said}); "
        "opscenter did not store it: set a password on the database by hand and update the "
        "server's credentials"
    )


async def rotate(target: connect.Target, password: str) -> str:
    """Sets and proves ``password`` for the target's database login; the login's name.
    Raises :class:`RotationFailed` with what happened and what to do."""
    engine = target.engine()
    if engine not in ENGINES:
        raise RotationFailed(f"no PostgreSQL or MySQL database on this server ({engine})")
    try:
        async with connect.open_runner(target) as runner:
            if engine == "postgresql":
                return await _pg(runner, target, password)
            return await _mysql(runner, target, password)
    except BackupError as exc:
        raise RotationFailed(scrub(connect.explain(exc), (password,))) from None
    except TimeoutError:
        raise RotationFailed(
            "the database did not answer in time, so whether the password changed is unknown: "
            "check whether the stored password still logs in (Test connection)"
        ) from None

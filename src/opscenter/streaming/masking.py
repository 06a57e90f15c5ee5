"""Masking sensitive columns in a restored database, in the target, after the restore.
The source is never touched. Rules name a column everywhere (`email`) or one table's
(`users.email`): `hash` (deterministic, keyed, so joins still match), `randomize`
(same shape: letters stay letters, digits digits), `null`, or `fixed:<value>`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines import mysql, postgres
from opscenter.engines.mysql import MySQLConnection, mysql_client_command, resolve_mysql_tool
from opscenter.engines.postgres import PgConnection, psql_command, select_pg_tool
from opscenter.remote.runner import CommandRunner

TEXT_TYPES_PG = ("text", "character varying", "character", "citext")
TEXT_TYPES_MYSQL = ("varchar", "char", "text", "tinytext", "mediumtext", "longtext")


@dataclass(frozen=True)
class Column:
    schema: str
    table: str
    name: str
    data_type: str
    max_length: int | None


@dataclass(frozen=True)
class MaskReport:
    columns: dict[str, str]  # "schema.table.column" -> rule
    rows_updated: int


def salt_for(secret: str) -> str:
    return hashlib.sha256(f"opscenter-masking:{secret}".encode()).hexdigest()[:32]


def _matches(column: Column, rule_key: str) -> bool:
    table, _, name = rule_key.rpartition(".")
    return column.name.lower() == name.lower() and (
        not table or column.table.lower() == table.lower()
    )


def _not_text(column: Column) -> BackupError:
    return BackupError(
        ErrorCode.INVALID_CONFIG,
        f"{column.table}.{column.name} is {column.data_type}: hash and randomize apply to "
        "text columns; use null or fixed:<value>",
    )


def _fit(expr: str, column: Column) -> str:
    return f"left({expr}, {column.max_length})" if column.max_length else expr


def _pg_expression(column: Column, rule: str, salt: str) -> str:
    c = postgres.quote_ident(column.name)
    text_like = column.data_type in TEXT_TYPES_PG
    if rule == "null":
        return "NULL"
    if rule.startswith("fixed:"):
        return (
            f"{postgres.quote_literal(rule[6:])}::{column.data_type}"
            if not text_like
            else _fit(postgres.quote_literal(rule[6:]), column)
        )
    if not text_like:
        raise _not_text(column)
    if rule == "hash":
        return _fit(
            f"encode(sha256(convert_to({postgres.quote_literal(salt)} || {c}, 'UTF8')), 'hex')",
            column,
        )
    return (
        "(SELECT string_agg(CASE WHEN ch ~ '[0-9]' THEN chr(48 + floor(random() * 10)::int) "
        "WHEN ch ~ '[a-z]' THEN chr(97 + floor(random() * 26)::int) "
        "WHEN ch ~ '[A-Z]' THEN chr(65 + floor(random() * 26)::int) ELSE ch END, '' ORDER BY i) "
        f"FROM unnest(string_to_array({c}, NULL)) WITH ORDINALITY AS u(ch, i))"
    )


async def mask_postgres(
    runner: CommandRunner, conn: PgConnection, rules: dict[str, str], salt: str
) -> MaskReport:
    psql = (await select_pg_tool(runner, "psql", None)).path

    async def query(sql: str) -> str:
        res = await runner.run(psql_command(psql, conn, sql), limit_seconds=3600)
        if res.returncode != 0:
            raise BackupError(
                ErrorCode.RESTORE_FAILED, "masking failed", stage="mask", detail=res.stderr
            )
        return res.stdout.decode("utf-8", "replace")

    listing = await query(
        "select table_schema, table_name, column_name, data_type, "
        "coalesce(character_maximum_length, 0) from information_schema.columns c "
        "where table_schema not in ('pg_catalog', 'information_schema') "
        "and exists (select 1 from information_schema.tables t "
        "where t.table_schema = c.table_schema "
        "and t.table_name = c.table_name and t.table_type = 'BASE TABLE')"
    )
    columns = [
        Column(s, t, n, d, int(m) or None)
        for s, t, n, d, m in (line.split("\t") for line in listing.splitlines() if line)
    ]
    plan = _plan(columns, rules)
    statements = []
    for column, rule in plan:
        expr = _pg_expression(column, rule, salt)
        where = (
            ""
            if rule in {"null"} or rule.startswith("fixed:")
            else f" WHERE {postgres.quote_ident(column.name)} IS NOT NULL"
        )
        table = f"{postgres.quote_ident(column.schema)}.{postgres.quote_ident(column.table)}"
        # Identifiers are quoted and values are literals built here: no user text is SQL.
        statements.append(f"UPDATE {table} SET {postgres.quote_ident(column.name)} = {expr}{where}")
    updated = 0
    if statements:
        # One transaction: all masked or none (a half-masked copy must never be left).
        out = await query("BEGIN;\n" + ";\n".join(statements) + ";\nCOMMIT;")
        updated = sum(
            int(line.split()[-1]) for line in out.splitlines() if line.startswith("UPDATE")
        )
    return MaskReport({f"{c.schema}.{c.table}.{c.name}": r for c, r in plan}, updated)


MYSQL_RANDOMIZE_FN = """
CREATE FUNCTION {fn}(s LONGTEXT) RETURNS LONGTEXT NOT DETERMINISTIC NO SQL
BEGIN
  DECLARE i INT DEFAULT 1;
  DECLARE r LONGTEXT DEFAULT '';
  DECLARE ch VARCHAR(4);
  IF s IS NULL THEN RETURN NULL; END IF;
  WHILE i <= CHAR_LENGTH(s) DO
    SET ch = SUBSTRING(s, i, 1);
    SET r = CONCAT(r, CASE
      WHEN ch REGEXP '^[0-9]$' THEN CHAR(48 + FLOOR(RAND() * 10))
      WHEN ch REGEXP BINARY '^[a-z]$' THEN CHAR(97 + FLOOR(RAND() * 26))
      WHEN ch REGEXP BINARY '^[A-Z]$' THEN CHAR(65 + FLOOR(RAND() * 26))
      ELSE ch END);
    SET i = i + 1;
  END WHILE;
  RETURN r;
END
"""


def _my_expression(column: Column, rule: str, salt: str, fn: str) -> str:
    c = mysql.quote_ident(column.name)
    text_like = column.data_type in TEXT_TYPES_MYSQL
    if rule == "null":
        return "NULL"
    if rule.startswith("fixed:"):
        return (
            _fit(mysql.quote_literal(rule[6:]), column)
            if text_like
            else mysql.quote_literal(rule[6:])
        )
    if not text_like:
        raise _not_text(column)
    if rule == "hash":
        return _fit(f"SHA2(CONCAT({mysql.quote_literal(salt)}, {c}), 256)", column)
    return f"{fn}({c})"


async def mask_mysql(
    runner: CommandRunner, conn: MySQLConnection, rules: dict[str, str], salt: str
) -> MaskReport:
    client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))

    async def query(sql: str) -> str:
        cmd = mysql_client_command(
            client, conn, "--batch", "--skip-column-names", "-e", sql, database=conn.database
        )
        res = await runner.run(cmd, limit_seconds=3600)
        if res.returncode != 0:
            raise BackupError(
                ErrorCode.RESTORE_FAILED, "masking failed", stage="mask", detail=res.stderr
            )
        return res.stdout.decode("utf-8", "replace")

    listing = await query(
        "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, "
        "COALESCE(c.CHARACTER_MAXIMUM_LENGTH, 0) FROM information_schema.COLUMNS c "
        "JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA "
        "AND t.TABLE_NAME = c.TABLE_NAME AND t.TABLE_TYPE = 'BASE TABLE' "
        "WHERE c.TABLE_SCHEMA = DATABASE()"
    )
    columns = [
        Column(s, t, n, d.lower(), min(int(m), 2**31) or None)
        for s, t, n, d, m in (line.split("\t") for line in listing.splitlines() if line)
    ]
    plan = _plan(columns, rules)
    fn = "oc_mask_shape_" + salt[:8]
    needs_fn = any(rule == "randomize" for _, rule in plan)
    statements = []
    for column, rule in plan:
        expr = _my_expression(column, rule, salt, fn)
        table, name = mysql.quote_ident(column.table), mysql.quote_ident(column.name)
        statements.append(f"UPDATE {table} SET {name} = {expr}")
    updated = 0
    if statements:
        if needs_fn:
            await query(MYSQL_RANDOMIZE_FN.format(fn=fn))
        try:
            script = (
                "START TRANSACTION;\n"
                + ";\nSELECT ROW_COUNT();\n".join(statements)
                + ";\nSELECT ROW_COUNT();\nCOMMIT;"
            )
            out = await query(script)
            updated = sum(
                int(line) for line in out.split() if line.lstrip("-").isdigit() and int(line) > 0
            )
        finally:
            if needs_fn:
                await query(f"DROP FUNCTION IF EXISTS {fn}")
    return MaskReport({f"{c.schema}.{c.table}.{c.name}": r for c, r in plan}, updated)


def _plan(columns: list[Column], rules: dict[str, str]) -> list[tuple[Column, str]]:
    plan: list[tuple[Column, str]] = []
    for key, rule in rules.items():
        hits = [c for c in columns if _matches(c, key)]
        if not hits:
            raise BackupError(
                ErrorCode.INVALID_CONFIG,
                f"masking rule {key!r} matches no column in the restored database",
            )
        plan.extend((c, rule) for c in hits)
    return plan

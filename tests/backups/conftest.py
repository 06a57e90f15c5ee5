"""Fixtures for the backup engine tests: real PostgreSQL and MariaDB on loopback.

Every database is named ``oc_test_<uuid8>`` and dropped in a finalizer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

try:  # until the package is installed in the venv (editable install by the lead)
    import opscenter  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from opscenter.engines.mysql import MySQLConnection
from opscenter.engines.postgres import PgConnection
from opscenter.stores.backends import LocalStorage
from opscenter.streaming.crypto import generate_identity, recipient_of

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MY_HOST, MY_PORT, MY_USER = "127.0.0.1", 3306, "root"


def psql(db: str, sql: str, *, check: bool = True) -> str:
    res = subprocess.run(
        [
            "psql",
            "-X",
            "-h",
            PG_HOST,
            "-p",
            str(PG_PORT),
            "-U",
            PG_USER,
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-q",
        ],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"psql failed: {res.stderr}")
    return res.stdout.strip()


def mysql(db: str | None, sql: str, *, check: bool = True) -> str:
    argv = [
        "mariadb",
        "-h",
        MY_HOST,
        "-P",
        str(MY_PORT),
        "-u",
        MY_USER,
        "--batch",
        "--skip-column-names",
        "--default-character-set=utf8mb4",
    ]
    if db:
        argv.append(db)
    res = subprocess.run(
        argv, input=sql, capture_output=True, text=True, errors="surrogateescape", check=False
    )
    if check and res.returncode != 0:
        raise AssertionError(f"mariadb failed: {res.stderr}")
    return res.stdout.strip()


def new_name(prefix: str = "oc_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_db() -> Iterator[Callable[[], str]]:
    """Factory: creates a fresh PostgreSQL database, dropped at teardown."""
    created: list[str] = []

    def make(name: str | None = None, *, create: bool = True) -> str:
        name = name or new_name()
        created.append(name)
        if create:
            psql("postgres", f'CREATE DATABASE "{name}"')
        return name

    yield make
    for name in created:
        psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)


@pytest.fixture
def my_db() -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make(name: str | None = None, *, create: bool = True) -> str:
        name = name or new_name()
        created.append(name)
        if create:
            mysql(None, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return name

    yield make
    for name in created:
        mysql(None, f"DROP DATABASE IF EXISTS `{name}`", check=False)


@pytest.fixture
def pg_conn() -> Callable[[str], PgConnection]:
    return lambda db: PgConnection(PG_HOST, db, PG_PORT, PG_USER)


@pytest.fixture
def my_conn() -> Callable[[str], MySQLConnection]:
    return lambda db: MySQLConnection(MY_HOST, db, MY_PORT, MY_USER)


@pytest.fixture(scope="session")
def age_identity() -> str:
    return generate_identity()


@pytest.fixture(scope="session")
def age_recipient(age_identity: str) -> str:
    return recipient_of(age_identity)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def all_files(root: Path) -> list[str]:
    """Every file under root, hidden and partial ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def pg_table_hashes(db: str) -> dict[str, str]:
    """Content hash per table: md5 of all rows (all columns) in a stable order."""
    tables = psql(
        db,
        "select format('%I.%I', schemaname, tablename) from pg_tables "
        "where schemaname not in ('pg_catalog','information_schema') order by 1",
    ).splitlines()
    out = {}
    for t in tables:
        out[t] = psql(
            db,
            f"select count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' "
            f"order by x::text)), '') from {t} x",
        )
    return out


def my_table_hashes(db: str) -> dict[str, str]:
    tables = mysql(db, "SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'").splitlines()
    out = {}
    for line in tables:
        t = line.split("\t")[0]
        cols = mysql(
            db,
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            f"AND TABLE_NAME = '{t}' ORDER BY ORDINAL_POSITION",
        ).splitlines()
        order = ", ".join(f"`{c}`" for c in cols)
        rows = mysql(db, f"SELECT * FROM `{t}` ORDER BY {order}")
        import hashlib

        out[t] = hashlib.md5(rows.encode(errors="surrogateescape")).hexdigest()
    return out


def have(tool: str) -> bool:
    from shutil import which

    return which(tool) is not None


def ensure_age_cli() -> None:
    """The standard-tools test needs the age CLI; install it from Debian if missing."""
    if have("age"):
        return
    subprocess.run(
        ["apt-get", "install", "-y", "age"],
        check=False,
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )

"""The size a backup's progress is estimated from, read from the real servers."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from opscenter.servers import connect
from opscenter.servers.schemas import ServerType


def sql(argv: list[str], statement: str) -> None:
    subprocess.run([*argv, statement], check=True, capture_output=True)


async def test_size_of_postgres_mariadb_and_a_directory(tmp_path: Path) -> None:
    name = f"oc_size_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc"]
    mysql = ["mariadb", "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-e"]
    pg = connect.Target(ServerType.POSTGRESQL, "127.0.0.1", 5432, username="postgres")
    my = connect.Target(ServerType.MYSQL, "127.0.0.1", 3306, username="root")
    (tmp_path / "a.bin").write_bytes(b"x" * 100_000)
    files = connect.Target(ServerType.LOCAL, "", None, paths=(str(tmp_path),))
    sql(psql, f'CREATE DATABASE "{name}"')
    sql(mysql, f"CREATE DATABASE `{name}`; CREATE TABLE `{name}`.t (v TEXT) ENGINE=InnoDB")
    try:
        for target, engine, source in (
            (pg, "postgresql", name),
            (my, "mysql", name),
            (files, "files", str(tmp_path)),
        ):
            async with connect.open_runner(target) as runner:
                size = await connect.size_of(runner, target, engine, source)
                assert size is not None and size > 0, engine
                missing = await connect.size_of(runner, target, engine, source + "_gone")
                assert missing is None, engine
    finally:
        sql(psql, f'DROP DATABASE IF EXISTS "{name}"')
        sql(mysql, f"DROP DATABASE IF EXISTS `{name}`")

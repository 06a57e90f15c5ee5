"""Parallel MySQL/MariaDB backups (``parallel_streams``): a schema part, per-table data
parts whose snapshots open under one read lock, the triggers last; restored, verified,
damaged."""

from __future__ import annotations

import asyncio
import os
import subprocess
import textwrap

import httpx
import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.models import StorageProvider
from opscenter.remote.runner import Command, LocalProcess
from opscenter.streaming.manifest import PART_NAME, read_manifest
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import MySQLTarget
from opscenter.streaming.sources import MySQLSource
from opscenter.streaming.verification import deep_verify
from tests.backups.helpers import damage_a_data_part
from tests.conftest import Api

from .conftest import MY_HOST, MY_PORT, MY_USER, ensure_age_cli, my_table_hashes, mysql
from .helpers import HookedStorage, RecordingRunner
from .test_backups import make_server, run_job

#: Tables of different sizes (so the groups differ), a name with a dot, a space and a
#: dash, a foreign key across groups, a view, a routine, and a trigger that would
#: count every row twice if it were restored before the data.
SCHEMA = textwrap.dedent(
    """
    CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT NOT NULL,
      audit INT DEFAULT 0) ENGINE=InnoDB;
    INSERT INTO big (body) SELECT REPEAT(MD5(seq), 8) FROM seq_1_to_4000;
    CREATE TABLE mid (id INT PRIMARY KEY, big_id INT, note VARCHAR(40),
      FOREIGN KEY (big_id) REFERENCES big (id)) ENGINE=InnoDB;
    INSERT INTO mid SELECT seq, seq, CONCAT('n', seq) FROM seq_1_to_2000;
    CREATE TABLE `we.ird -t` (k VARCHAR(20) PRIMARY KEY) ENGINE=InnoDB;
    INSERT INTO `we.ird -t` SELECT CONCAT('k', seq) FROM seq_1_to_300;
    CREATE TABLE small (id INT) ENGINE=InnoDB;
    INSERT INTO small VALUES (1), (2);
    CREATE TABLE empty (id INT) ENGINE=InnoDB;
    CREATE VIEW v_big AS SELECT id, LENGTH(body) AS n FROM big WHERE id % 2 = 0;
    CREATE FUNCTION add_ints(a INT, b INT) RETURNS INT DETERMINISTIC RETURN a + b;
    CREATE TRIGGER big_ins BEFORE INSERT ON big FOR EACH ROW SET NEW.audit = NEW.audit + 1;
    """
)


def _facts(db: str) -> dict[str, str]:
    """What my_table_hashes does not cover: the view, the routine, the trigger."""
    return {
        "view": mysql(db, "SELECT CONCAT(COUNT(*), '/', SUM(n)) FROM v_big"),
        "func": mysql(db, "SELECT add_ints(2, 3)"),
        "triggers": mysql(
            db,
            "SELECT GROUP_CONCAT(TRIGGER_NAME) FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = DATABASE()",
        ),
    }


class _WritesBeforeADumpStarts(RecordingRunner):
    """Sends an INSERT into ``big`` just before the dump of ``big`` starts, and gives it
    time to land: the read lock must hold it until every dump has its snapshot, so the
    row is in the source and in no dump."""

    def __init__(self, db: str) -> None:
        super().__init__()
        self.db = db
        self.writer: subprocess.Popen[bytes] | None = None
        self.held = False  # the INSERT was still waiting when the dump started

    async def start(
        self, command: Command, *, stdin: int | None = None, stdout: int | None = None
    ) -> LocalProcess:
        argv = command.argv
        tables = argv[argv.index("--") + 2 :] if "--" in argv else ()
        dumps_big = "big" in tables or (not tables and f"--ignore-table={self.db}.big" not in argv)
        if "--single-transaction" in argv and dumps_big:
            self.writer = subprocess.Popen(
                ["mariadb", "-h", MY_HOST, "-P", str(MY_PORT), "-u", MY_USER, self.db],
                stdin=subprocess.PIPE,
            )
            assert self.writer.stdin is not None
            self.writer.stdin.write(b"INSERT INTO big (body) VALUES ('after the snapshot');\n")
            self.writer.stdin.close()
            await asyncio.sleep(0.3)
            self.held = self.writer.poll() is None
        return await super().start(command, stdin=stdin, stdout=stdout)


async def test_parallel_backup_restores_equal_to_its_snapshot(
    my_db, my_conn, storage, age_identity, age_recipient
):
    src = my_db()
    mysql(src, SCHEMA)
    before = my_table_hashes(src), _facts(src)
    runner = _WritesBeforeADumpStarts(src)
    result = await run_backup(
        MySQLSource(my_conn(src)),
        storage,
        options=BackupOptions(recipients=(age_recipient,), parallel_streams=3),
        runner=runner,
    )
    assert runner.held  # by the lock, which was let go once the dumps had begun:
    assert runner.writer is not None and runner.writer.wait(10) == 0
    assert mysql(src, "SELECT COUNT(*) FROM big WHERE body = 'after the snapshot'") == "1"
    assert [p.section for p in result.parts] == ["pre-data", "data", "data", "data", "post-data"]
    dumps = [c.argv for c in runner.commands if "mariadb-dump" in " ".join(c.argv)]
    assert len(dumps) == 5
    # Only the data dumps take a snapshot (they start in any order).
    assert sorted(d.count("--single-transaction") for d in dumps) == [0, 0, 1, 1, 1]

    manifest = await read_manifest(storage, result.key)
    assert manifest.parts == result.parts
    assert all(p.key.endswith(".sql.zst.age") for p in result.parts)
    assert all(PART_NAME.search(p.key) for p in result.parts[1:])
    dst = my_db(create=False)
    restored = await run_restore(
        storage, manifest, MySQLTarget(my_conn(dst), create=True), identities=[age_identity]
    )
    assert restored.bytes_read == result.size_bytes
    assert (my_table_hashes(dst), _facts(dst)) == before
    assert mysql(dst, "SELECT COUNT(*) FROM big WHERE body = 'after the snapshot'") == "0"

    deep = await deep_verify(storage, manifest, identities=[age_identity])
    assert deep.dump_bytes == result.original_size_bytes and "5 parts" in deep.detail

    # By hand, with standard tools: the manifest's command run beside the parts.
    ensure_age_cli()
    by_hand = my_db()
    here = storage.path_for(result.key).parent
    (here / "key.txt").write_text(age_identity + "\n")
    command = manifest.restore_command.replace(f"mariadb {src}", f"mariadb {by_hand}")
    env = {**os.environ, "MYSQL_HOST": MY_HOST, "MYSQL_TCP_PORT": str(MY_PORT), "USER": MY_USER}
    subprocess.run(["sh", "-ec", command], cwd=here, env=env, check=True)
    assert (my_table_hashes(by_hand), _facts(by_hand)) == before


async def test_a_corrupted_part_fails_verification_and_restore_untouched(my_db, my_conn, storage):
    src = my_db()
    mysql(src, SCHEMA)
    result = await run_backup(
        MySQLSource(my_conn(src)), storage, options=BackupOptions(parallel_streams=2)
    )
    manifest = await damage_a_data_part(storage, result.key)
    existing = my_db()
    mysql(existing, "CREATE TABLE keep (id INT); INSERT INTO keep VALUES (7)")
    with pytest.raises(BackupError):  # every part is checked before the first statement
        await run_restore(storage, manifest, MySQLTarget(my_conn(existing), replace=True))
    assert mysql(existing, "SHOW TABLES") == "keep"
    assert mysql(existing, "SELECT id FROM keep") == "7"


async def test_tables_a_snapshot_does_not_cover_are_refused(my_db, my_conn, storage):
    src = my_db()
    mysql(src, "CREATE TABLE t (id INT) ENGINE=InnoDB; CREATE TABLE m (id INT) ENGINE=MyISAM")
    with pytest.raises(BackupError) as err:
        await run_backup(
            MySQLSource(my_conn(src)), storage, options=BackupOptions(parallel_streams=2)
        )
    assert err.value.code is ErrorCode.INVALID_CONFIG and "m (MyISAM)" in err.value.message
    assert list(storage.root.rglob("*")) == []


async def test_a_lock_not_granted_in_time_fails_clearly(my_db, my_conn, storage):
    src = my_db()
    mysql(src, "CREATE TABLE t (id INT) ENGINE=InnoDB")
    # Another session holds a table: the read lock waits for it, at most lock_timeout.
    holder = subprocess.Popen(
        ["mariadb", "-h", MY_HOST, "-P", str(MY_PORT), "-u", MY_USER, src],
        stdin=subprocess.PIPE,
    )
    assert holder.stdin is not None
    holder.stdin.write(b"LOCK TABLES t WRITE; SELECT SLEEP(3);\n")
    holder.stdin.flush()
    try:
        await asyncio.sleep(0.3)
        with pytest.raises(BackupError) as err:
            await run_backup(
                MySQLSource(my_conn(src), lock_timeout=1),
                storage,
                options=BackupOptions(parallel_streams=2),
            )
    finally:
        holder.kill()
        holder.wait()
    assert err.value.code is ErrorCode.DUMP_FAILED and err.value.stage == "snapshot"
    assert "could not lock the tables" in err.value.message and "1 s" in err.value.message
    assert list(storage.root.rglob("*")) == []


async def test_a_failed_or_cancelled_part_leaves_nothing_and_no_lock(my_db, my_conn, tmp_path):
    src = my_db()
    mysql(src, SCHEMA)
    storage = HookedStorage(tmp_path / "store")
    storage.fail_after = 32 << 10  # the data part of big fails
    with pytest.raises(BackupError) as err:
        await run_backup(
            MySQLSource(my_conn(src)), storage, options=BackupOptions(parallel_streams=2)
        )
    assert err.value.code is ErrorCode.DISK_FULL
    assert list(storage.root.rglob("*.*")) == []

    storage.fail_after = None
    storage.paused = asyncio.Event()  # every part backs up to its dump: cancel then
    runner = RecordingRunner()
    task = asyncio.ensure_future(
        run_backup(
            MySQLSource(my_conn(src)),
            storage,
            options=BackupOptions(parallel_streams=2),
            runner=runner,
        )
    )
    while len([c for c in runner.commands if "--no-create-info" in c.argv]) < 2:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    task.cancel()
    storage.paused.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(storage.root.rglob("*.*")) == []
    assert all(p.returncode is not None for p in runner.started)  # the dumps and the lock
    mysql(src, "INSERT INTO small VALUES (3)")  # no read lock is left behind


async def test_through_the_api_backup_restore_replace_delete(
    api: Api, admin: httpx.AsyncClient, my_db
) -> None:
    src, restored = my_db(), my_db(create=False)
    mysql(src, SCHEMA)
    server = await make_server(admin, type="mysql", port=3306, credentials={"username": "root"})
    accepted = await admin.post(
        "/api/v1/backups",
        json={"server_id": server["id"], "database_name": src, "parallel_streams": 2},
    )
    assert (await run_job(api, admin, accepted))["status"] == "succeeded"
    backup = (await admin.get(f"/api/v1/backups/{accepted.json()['id']}")).json()
    assert backup["parallel_streams"] == 2
    url = f"/api/v1/backups/{backup['id']}/restore"
    for body in ({}, {"drop_existing": True}):  # into a new database, then replacing it
        job = await run_job(
            api, admin, await admin.post(url, json={"target_database": restored, **body})
        )
        assert job["status"] == "succeeded", job
        assert (my_table_hashes(restored), _facts(restored)) == (
            my_table_hashes(src),
            _facts(src),
        )
    ctx = api.app.state.ctx
    async with ctx.db.read_session() as session:
        storage = ctx.storages.get(await session.get(StorageProvider, backup["storage_id"]))
    stem = backup["storage_path"].split(".sql", 1)[0]
    assert len([o async for o in storage.list(stem)]) == 5  # 4 parts, the manifest
    assert (await admin.delete(f"/api/v1/backups/{backup['id']}")).status_code == 204
    assert [o async for o in storage.list(stem)] == []

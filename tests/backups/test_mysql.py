"""MariaDB: round trip (routine, trigger, utf8mb4), faults, trailer verification."""

from __future__ import annotations

import dataclasses
import hashlib
import stat
import textwrap

import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines.mysql import MySQLConnection
from opscenter.remote.runner import Command, LocalProcess, LocalRunner
from opscenter.streaming.manifest import read_manifest, write_manifest
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import MySQLTarget, deep_verify, run_restore
from opscenter.streaming.sources import MySQLSource
from opscenter.streaming.streams import Compression

from .conftest import all_files, my_table_hashes, mysql, new_name

SCHEMA = textwrap.dedent(
    """
    CREATE TABLE people (
      id INT AUTO_INCREMENT PRIMARY KEY,
      name VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
      bio TEXT CHARACTER SET utf8mb4, data JSON, blobby BLOB, amount DECIMAL(20, 6),
      born DATE, seen DATETIME(6), audit INT DEFAULT 0
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
    INSERT INTO people (name, bio, data, blobby, amount, born, seen) VALUES
      ('Zoë 🎉', 'emoji 😀🚀 and “quotes” and \\\\ backslash', '{"k": [1, 2, "☕"]}',
       UNHEX('00FF10'), 12345.678901, '2000-02-29', '2024-01-01 12:34:56.123456'),
      ('plain', REPEAT('long text ', 5000), NULL, NULL, -1.5, NULL, NULL),
      ('tab\\there', 'line\\nbreak', '[]', '', 0, '1970-01-01', '1970-01-01 00:00:01');
    CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(100));
    DELIMITER //
    CREATE TRIGGER people_ins BEFORE INSERT ON people FOR EACH ROW
      BEGIN SET NEW.audit = NEW.audit + 1; END//
    CREATE FUNCTION greet(n VARCHAR(50)) RETURNS VARCHAR(100) DETERMINISTIC
      RETURN CONCAT('hi ', n, ' 👋')//
    CREATE PROCEDURE add_log(IN m VARCHAR(100)) BEGIN INSERT INTO log (msg) VALUES (m); END//
    DELIMITER ;
    CALL add_log('first');
    """
)


async def test_roundtrip(my_db, my_conn, storage, age_identity, age_recipient):
    src = my_db()
    mysql(src, SCHEMA)
    result = await run_backup(
        MySQLSource(my_conn(src)),
        storage,
        options=BackupOptions(recipients=(age_recipient,), row_counts=True),
    )
    assert result.key.endswith(".sql.zst.age")
    manifest = await read_manifest(storage, result.key)
    assert manifest.row_counts is not None
    assert manifest.row_counts.tables == {"log": 1, "people": 3}
    assert manifest.server_version and "MariaDB" in manifest.server_version
    await deep_verify(storage, manifest, identities=[age_identity])

    dst = my_db(create=False)
    await run_restore(
        storage, manifest, MySQLTarget(my_conn(dst), create=True), identities=[age_identity]
    )
    assert my_table_hashes(dst) == my_table_hashes(src)
    assert mysql(dst, "SELECT name FROM people WHERE id = 1") == "Zoë 🎉"
    assert mysql(dst, "SELECT greet('Zoë')") == "hi Zoë 👋"
    mysql(dst, "CALL add_log('second'); INSERT INTO people (name) VALUES ('new')")
    assert mysql(dst, "SELECT COUNT(*) FROM log") == "2"
    assert mysql(dst, "SELECT audit FROM people WHERE name = 'new'") == "1"


async def test_password_in_defaults_file_only(my_db, storage):
    db = my_db()
    user, password = new_name("oc_u"), "Pw'd\"with\\odd chars"
    esc = password.replace("\\", "\\\\").replace("'", "\\'")
    mysql(None, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{esc}'")
    try:
        mysql(None, f"GRANT ALL ON `{db}`.* TO '{user}'@'127.0.0.1'")
        mysql(db, "CREATE TABLE t (i INT); INSERT INTO t VALUES (1)")
        seen: list[tuple[Command, int]] = []

        class Spy(LocalRunner):
            async def start(self, command, *, stdin=None, stdout=None) -> LocalProcess:
                proc = await super().start(command, stdin=stdin, stdout=stdout)
                # The defaults file exists, mode 0600, while the dump runs.
                path = proc._secret_dir.paths[command.secret_files[0].ref]
                seen.append((command, stat.S_IMODE(__import__("os").stat(path).st_mode)))
                self.path = path
                return proc

        spy = Spy()
        conn = MySQLConnection("127.0.0.1", db, user=user, password=password)
        await run_backup(MySQLSource(conn), storage, runner=spy)
        ((command, mode),) = seen
        assert mode == 0o600
        assert not any(password in a for a in command.argv)
        assert not __import__("os").path.exists(spy.path)  # deleted afterwards

        wrong = dataclasses.replace(conn, password="definitely-wrong-pw")
        with pytest.raises(BackupError) as info:
            await run_backup(MySQLSource(wrong), storage)
        assert info.value.code is ErrorCode.AUTH_FAILED
        assert "definitely-wrong-pw" not in str(info.value)
    finally:
        mysql(None, f"DROP USER IF EXISTS '{user}'@'127.0.0.1'", check=False)


async def test_unreachable_and_missing(my_conn, storage):
    with pytest.raises(BackupError) as info:
        await run_backup(
            MySQLSource(MySQLConnection("127.0.0.1", "x", port=1, connect_timeout=3)), storage
        )
    assert info.value.code is ErrorCode.UNREACHABLE
    with pytest.raises(BackupError) as info:
        await run_backup(MySQLSource(my_conn(new_name())), storage)
    assert info.value.code is ErrorCode.DATABASE_MISSING
    with pytest.raises(BackupError) as info:  # without the probe: mariadb-dump's own error
        await run_backup(MySQLSource(my_conn(new_name()), probe=False), storage)
    assert info.value.code is ErrorCode.DATABASE_MISSING
    assert all_files(storage.root) == [] if storage.root.exists() else True


async def test_deep_verify_needs_the_trailer(my_db, my_conn, storage):
    """A SQL dump cut at a statement boundary is valid SQL: only the trailer tells."""
    src = my_db()
    mysql(src, "CREATE TABLE t (i INT); INSERT INTO t VALUES (1), (2)")
    result = await run_backup(
        MySQLSource(my_conn(src)), storage, options=BackupOptions(compression=Compression.NONE)
    )
    manifest = await read_manifest(storage, result.key)
    path = storage.path_for(result.key)
    text = path.read_bytes()
    cut = text[: text.rindex(b"-- Dump completed")]
    path.write_bytes(cut)
    forged = dataclasses.replace(
        manifest, size_bytes=len(cut), sha256=hashlib.sha256(cut).hexdigest()
    )
    await storage.delete(result.key + ".manifest.json")
    await write_manifest(storage, forged)
    with pytest.raises(BackupError) as info:
        await deep_verify(storage, forged)
    assert info.value.code is ErrorCode.VERIFY_FAILED
    dst = my_db()
    with pytest.raises(BackupError) as info:
        await run_restore(storage, forged, MySQLTarget(my_conn(dst)))
    assert info.value.code is ErrorCode.VERIFY_FAILED

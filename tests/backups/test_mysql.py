"""MariaDB: round trip (routine, trigger, utf8mb4), faults, trailer verification."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import stat
import tempfile
import textwrap
from pathlib import Path

import pytest

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines.mysql import MySQLConnection
from opscenter.remote.runner import Command, LocalProcess, LocalRunner
from opscenter.streaming.manifest import read_manifest, write_manifest
from opscenter.streaming.masking import mask_mysql
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import MySQLTarget
from opscenter.streaming.sources import MySQLSource
from opscenter.streaming.streams import Compression
from opscenter.streaming.verification import deep_verify

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
                # The defaults file is an inherited descriptor, mode 0600, nothing on disk.
                path = proc._secrets.paths[command.secret_files[0].ref]
                link = os.readlink(f"/proc/{proc.pid}/fd/{path.rsplit('/', 1)[1]}")
                seen.append((command, stat.S_IMODE(os.stat(path).st_mode), link))
                return proc

        spy = Spy()
        conn = MySQLConnection("127.0.0.1", db, user=user, password=password)
        await run_backup(MySQLSource(conn), storage, runner=spy)
        ((command, mode, link),) = seen
        assert mode == 0o600 and link.startswith("/memfd:mysql-client")
        assert not any(password in a for a in command.argv)

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


def _big_source(db: str) -> None:
    """Two tables of random rows, ~15 MB of dump: far more than the restore's held-back
    tail and the pipe to the client, so the dump's first statements would reach the
    server long before the artifact's end is read."""
    mysql(
        db,
        "CREATE TABLE a (id INT PRIMARY KEY, v LONGTEXT); CREATE TABLE b (id INT PRIMARY KEY, "
        "v LONGTEXT); INSERT INTO a SELECT seq, CONCAT("
        + ", ".join(["MD5(RAND())"] * 40)
        + ") FROM seq_1_to_6000; INSERT INTO b SELECT * FROM a;",
    )


def _flip_near_end(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))


async def test_corrupt_artifact_leaves_the_target_as_it_was(
    my_db, my_conn, storage, age_identity, age_recipient
):
    """One flipped byte near the end: the restore over an existing database fails
    before any statement reaches it (the whole artifact is checked first)."""
    src = my_db()
    _big_source(src)
    result = await run_backup(
        MySQLSource(my_conn(src)), storage, options=BackupOptions(recipients=(age_recipient,))
    )
    manifest = await read_manifest(storage, result.key)
    _flip_near_end(storage.path_for(result.key))
    dst = my_db()
    mysql(dst, "CREATE TABLE a (id INT PRIMARY KEY, v TEXT); INSERT INTO a VALUES (1, 'old');")
    mysql(dst, "CREATE TABLE keep (i INT); INSERT INTO keep VALUES (7)")
    before = my_table_hashes(dst)
    with pytest.raises(BackupError) as info:
        await run_restore(
            storage, manifest, MySQLTarget(my_conn(dst), replace=True), identities=[age_identity]
        )
    assert info.value.code in (ErrorCode.CHECKSUM_MISMATCH, ErrorCode.DECRYPT_FAILED)
    assert my_table_hashes(dst) == before
    new = my_db(create=False)
    with pytest.raises(BackupError):
        await run_restore(
            storage, manifest, MySQLTarget(my_conn(new), create=True), identities=[age_identity]
        )
    assert mysql(None, f"SHOW DATABASES LIKE '{new}'") == ""


async def test_replace_leaves_exactly_the_backup(my_db, my_conn, storage):
    """``replace`` (drop_existing): tables, views and routines not in the backup go."""
    src = my_db()
    mysql(src, SCHEMA)
    result = await run_backup(MySQLSource(my_conn(src)), storage)
    manifest = await read_manifest(storage, result.key)
    dst = my_db()
    mysql(
        dst,
        "CREATE TABLE stray (i INT); CREATE VIEW stray_view AS SELECT * FROM stray; "
        "CREATE TABLE people (id INT); CREATE PROCEDURE stray_proc() SELECT 1;",
    )
    await run_restore(storage, manifest, MySQLTarget(my_conn(dst), replace=True))
    assert my_table_hashes(dst) == my_table_hashes(src)
    assert mysql(dst, "SHOW FULL TABLES") == mysql(src, "SHOW FULL TABLES")
    routines = (
        "SELECT ROUTINE_NAME FROM information_schema.ROUTINES "
        "WHERE ROUTINE_SCHEMA = '{}' ORDER BY 1"
    )
    assert mysql(None, routines.format(dst)) == mysql(None, routines.format(src))


async def test_missing_privilege_says_what_failed(my_db, my_conn, storage):
    """A user who may log in but not create databases: not an authentication error."""
    src = my_db()
    mysql(src, "CREATE TABLE t (i INT)")
    manifest = await read_manifest(
        storage, (await run_backup(MySQLSource(my_conn(src)), storage)).key
    )
    user = new_name("oc_user")
    mysql(None, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'")
    try:
        conn = dataclasses.replace(my_conn(my_db(create=False)), user=user, password=f"pw-{user}")
        with pytest.raises(BackupError) as info:
            await run_restore(storage, manifest, MySQLTarget(conn, create=True))
    finally:
        mysql(None, f"DROP USER '{user}'@'%'")
    assert info.value.code is ErrorCode.PERMISSION_DENIED
    assert "creating the database" in info.value.message
    assert "Access denied" in info.value.message and f"pw-{user}" not in str(info.value)


async def test_names_starting_with_a_dash_are_data_not_options(
    my_db, my_conn, storage, age_identity, age_recipient
):
    # As a bare argument, `--tee=FILE` made the client log into FILE and `-P1` set the port.
    tee = Path(tempfile.gettempdir()) / new_name("tee")  # short: a name has 64 characters
    with pytest.raises(BackupError) as info:
        await run_backup(MySQLSource(my_conn(f"--tee={tee}")), storage)
    assert info.value.code is ErrorCode.DATABASE_MISSING
    assert not tee.exists()

    src = my_db(f"-P1{new_name('')}")
    mysql(
        None,
        f"CREATE TABLE `{src}`.t (i INT, s VARCHAR(20)); INSERT INTO `{src}`.t VALUES (1, 'x')",
    )
    result = await run_backup(
        MySQLSource(my_conn(src)),
        storage,
        options=BackupOptions(recipients=(age_recipient,), row_counts=True),
    )
    manifest = await read_manifest(storage, result.key)
    assert manifest.database == src and manifest.row_counts.tables == {"t": 1}
    dst = my_db(f"--tee={tee}", create=False)
    await run_restore(
        storage, manifest, MySQLTarget(my_conn(dst), create=True), identities=[age_identity]
    )
    await mask_mysql(LocalRunner(), my_conn(dst), {"t.s": "null"}, "salt")
    assert mysql(None, f"SELECT i, s FROM `{dst}`.t") == "1\tNULL"
    assert not tee.exists()

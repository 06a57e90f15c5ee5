"""The JSON manifest written beside each artifact; storage describes itself.

Commit order: the object (and, for PostgreSQL, the cluster globals beside it) is
committed, then ``<key>.manifest.json`` is written, then the caller marks the backup
completed. An object without a manifest is never shown as usable (:func:`scan_catalog`
reports it as an orphan), so the catalog can be rebuilt from storage alone. The objects
of one backup are listed by :func:`backup_object_keys` and removed, manifest last, by
:func:`delete_backup_objects`.

A parallel PostgreSQL backup (``parallel_streams``) is several pg_dump archives of one
snapshot, listed in order by ``Manifest.parts``: the pre-data section under the
backup's own key, the table data in ``.data-N`` parts, the post-data section in a
``.post-data`` part (:func:`part_key`). A manifest without parts is one archive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opscenter.core.failures import BackupError, ErrorCode
from opscenter.engines import mysql
from opscenter.engines.mysql import mysql_client_command, resolve_mysql_tool
from opscenter.engines.postgres import find_pg_tools, psql_command
from opscenter.remote.runner import CommandRunner
from opscenter.stores.backends import StorageBackend, StorageError
from opscenter.streaming.crypto import key_id
from opscenter.streaming.sources import Engine, MySQLSource, PostgresSource
from opscenter.streaming.streams import Compression

if TYPE_CHECKING:
    from opscenter.streaming.sources import DumpPlan, DumpSource

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_SUFFIX",
    "CatalogScan",
    "EncryptionInfo",
    "GlobalsInfo",
    "Manifest",
    "PartInfo",
    "RowCounts",
    "backup_object_keys",
    "build_manifest",
    "collect_row_counts",
    "delete_backup_objects",
    "globals_key",
    "globals_restore_command",
    "manifest_key",
    "part_key",
    "read_manifest",
    "restore_command",
    "scan_catalog",
    "write_manifest",
]

MANIFEST_FORMAT = "opscenter.backup-manifest.v1"
MANIFEST_SUFFIX = ".manifest.json"
#: Replaces the ``.dump`` of a PostgreSQL artifact's name for its cluster globals.
GLOBALS_INFIX = ".globals.sql"
MAX_MANIFEST = 4 << 20
#: The name of a part of a parallel backup other than its first (see :func:`part_key`).
PART_NAME = re.compile(r"\.(data-\d+|post-data)(\.dump|\.sql|$)")
SECTIONS = ("pre-data", "data", "post-data")
#: Tables with up to this many (estimated) rows get an exact count(*).
EXACT_COUNT_MAX_ROWS = 2_000_000


@dataclass(frozen=True, slots=True)
class RowCounts:
    tables: dict[str, int]
    #: Tables whose count is the catalog's estimate (too big to count exactly cheaply).
    estimated: tuple[str, ...] = ()
    collected_at: str = ""


@dataclass(frozen=True, slots=True)
class EncryptionInfo:
    format: str  # "age"
    recipients: tuple[dict[str, str], ...]  # {"recipient": "age1...", "key_id": "..."}

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(r["key_id"] for r in self.recipients)


@dataclass(frozen=True, slots=True)
class GlobalsInfo:
    """The PostgreSQL cluster globals (``pg_dumpall --globals-only``) saved beside a dump.

    ``status`` is ``saved`` (the object ``key`` holds them), ``skipped`` (the account
    may not read them; ``reason`` says why) or ``failed`` (``reason`` has the error;
    the backup itself succeeded and reported a warning).
    """

    status: str
    key: str | None = None
    size_bytes: int | None = None
    original_size_bytes: int | None = None
    sha256: str | None = None
    #: False when dumped with ``--no-role-passwords`` (the account is not a superuser).
    role_passwords: bool | None = None
    tool_version: str = ""
    reason: str = ""
    restore_command: str = ""

    @property
    def saved(self) -> bool:
        return self.status == "saved" and self.key is not None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GlobalsInfo:
        status = _str(raw, "status")
        if status not in ("saved", "skipped", "failed"):
            raise ValueError(f"unknown globals status {status!r}")
        info = cls(
            status=status,
            key=_opt_str(raw, "key"),
            size_bytes=_opt_int(raw, "size_bytes"),
            original_size_bytes=_opt_int(raw, "original_size_bytes"),
            sha256=None if raw.get("sha256") is None else _sha(raw),
            role_passwords=None
            if raw.get("role_passwords") is None
            else bool(raw["role_passwords"]),
            tool_version=str(raw.get("tool_version", "")),
            reason=str(raw.get("reason", "")),
            restore_command=str(raw.get("restore_command", "")),
        )
        if info.status == "saved" and (
            info.key is None or info.size_bytes is None or info.sha256 is None
        ):
            raise ValueError("saved globals need key, size_bytes and sha256")
        return info


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One archive of a parallel backup: restored in ``order`` (pre-data, the data
    parts in parallel, post-data)."""

    key: str
    order: int
    section: str  # "pre-data" | "data" | "post-data"
    size_bytes: int
    original_size_bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PartInfo:
        section = _str(raw, "section")
        if section not in SECTIONS:
            raise ValueError(f"unknown section {section!r}")
        return cls(
            key=_str(raw, "key"),
            order=_int(raw, "order"),
            section=section,
            size_bytes=_int(raw, "size_bytes"),
            original_size_bytes=_int(raw, "original_size_bytes"),
            sha256=_sha(raw),
        )


def _check_parts(m: Manifest) -> None:
    """The first part is the backup's own object, then data parts, post-data last."""
    if not m.parts:
        return
    first, last = m.parts[0], m.parts[-1]
    if (first.key, first.size_bytes, first.sha256) != (m.key, m.size_bytes, m.sha256):
        raise ValueError("the first part must be the backup's own object")
    if [p.order for p in m.parts] != list(range(len(m.parts))):
        raise ValueError("parts must be listed in order 0, 1, ...")
    middle = {p.section for p in m.parts[1:-1]}
    if first.section != "pre-data" or last.section != "post-data" or middle != {"data"}:
        raise ValueError("parts must be pre-data, data..., post-data")
    if len({p.key for p in m.parts}) != len(m.parts):
        raise ValueError("a part is listed twice")


@dataclass(frozen=True, slots=True)
class Manifest:
    key: str
    engine: str
    dump_format: str
    database: str
    server_version: str | None
    tool: str
    tool_versions: dict[str, str]
    size_bytes: int
    original_size_bytes: int
    sha256: str
    compression: str
    encryption: EncryptionInfo | None
    started_at: str
    created_at: str
    duration_seconds: float
    restore_command: str
    row_counts: RowCounts | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: PostgreSQL only: the cluster globals saved beside the dump (or why not).
    globals: GlobalsInfo | None = None
    #: Parallel backups: every archive in restore order, the first being ``key``
    #: (whose size and sha256 are the fields above); empty: ``key`` is the whole dump.
    parts: tuple[PartInfo, ...] = ()
    format: str = MANIFEST_FORMAT

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    @property
    def total_size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.parts) if self.parts else self.size_bytes

    @property
    def total_original_size_bytes(self) -> int:
        if not self.parts:
            return self.original_size_bytes
        return sum(p.original_size_bytes for p in self.parts)

    def part_manifests(self) -> list[Manifest]:
        """One manifest per stored archive, in restore order, to stream each through the
        same checks (``[self]`` for a one-archive backup)."""
        return [
            dataclasses.replace(
                self,
                key=p.key,
                size_bytes=p.size_bytes,
                original_size_bytes=p.original_size_bytes,
                sha256=p.sha256,
                globals=None,
                parts=(),
            )
            for p in self.parts
        ] or [self]

    @property
    def compression_kind(self) -> Compression:
        return Compression(self.compression)

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, expected_key: str | None = None) -> Manifest:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"unknown manifest format {raw.get('format')!r}")
            enc = raw.get("encryption")
            rc = raw.get("row_counts")
            gl = raw.get("globals")
            m = cls(
                key=_str(raw, "key"),
                engine=Engine(_str(raw, "engine")).value,
                dump_format=_str(raw, "dump_format"),
                database=_str(raw, "database"),
                server_version=raw.get("server_version"),
                tool=_str(raw, "tool"),
                tool_versions={str(k): str(v) for k, v in raw.get("tool_versions", {}).items()},
                size_bytes=_int(raw, "size_bytes"),
                original_size_bytes=_int(raw, "original_size_bytes"),
                sha256=_sha(raw),
                compression=Compression(_str(raw, "compression")).value,
                encryption=None
                if enc is None
                else EncryptionInfo(
                    format=str(enc["format"]),
                    recipients=tuple(
                        {"recipient": str(r["recipient"]), "key_id": str(r["key_id"])}
                        for r in enc["recipients"]
                    ),
                ),
                started_at=_str(raw, "started_at"),
                created_at=_str(raw, "created_at"),
                duration_seconds=float(raw["duration_seconds"]),
                restore_command=str(raw.get("restore_command", "")),
                row_counts=None
                if rc is None
                else RowCounts(
                    tables={str(k): int(v) for k, v in rc["tables"].items()},
                    estimated=tuple(str(t) for t in rc.get("estimated", ())),
                    collected_at=str(rc.get("collected_at", "")),
                ),
                labels={str(k): str(v) for k, v in raw.get("labels", {}).items()},
                globals=None if gl is None else GlobalsInfo.from_dict(gl),
                parts=tuple(PartInfo.from_dict(p) for p in raw.get("parts", ())),
            )
            _check_parts(m)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(
                ErrorCode.MANIFEST_INVALID, f"invalid manifest: {exc}", stage="manifest"
            ) from exc
        if expected_key is not None and m.key != expected_key:
            raise BackupError(
                ErrorCode.MANIFEST_INVALID,
                f"manifest names {m.key!r} but sits beside {expected_key!r}",
                stage="manifest",
            )
        return m


def _str(raw: dict[str, Any], name: str) -> str:
    v = raw[name]
    if not isinstance(v, str) or not v:
        raise ValueError(f"{name} must be a non-empty string")
    return v


def _int(raw: dict[str, Any], name: str) -> int:
    v = raw[name]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return v


def _opt_str(raw: dict[str, Any], name: str) -> str | None:
    return None if raw.get(name) is None else _str(raw, name)


def _opt_int(raw: dict[str, Any], name: str) -> int | None:
    return None if raw.get(name) is None else _int(raw, name)


def _sha(raw: dict[str, Any]) -> str:
    v = _str(raw, "sha256").lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise ValueError("sha256 must be 64 hex digits")
    return v


def manifest_key(artifact_key: str) -> str:
    return artifact_key + MANIFEST_SUFFIX


def _dump_token(name: str, extension: str = ".dump") -> int:
    """Index of the ``extension`` in an object name, or -1."""
    i = name.rfind(extension)
    while i >= 0:
        end = i + len(extension)
        if end == len(name) or name[end] == ".":
            return i
        i = name.rfind(extension, 0, i)
    return -1


def globals_key(
    artifact_key: str, compression: Compression | None = None, encrypted: bool = False
) -> str:
    """Key of the cluster globals beside a PostgreSQL artifact.

    ``.../20240501T030000Z-1a2b3c4d.dump.zst.age`` ->
    ``.../20240501T030000Z-1a2b3c4d.globals.sql.zst.age``. For a key without a
    ``.dump`` extension the codec suffixes are appended after ``.globals.sql``.
    """
    head, sep, name = artifact_key.rpartition("/")
    i = _dump_token(name)
    if i >= 0:
        name = name[:i] + GLOBALS_INFIX + name[i + len(".dump") :]
    else:
        name += GLOBALS_INFIX + (compression.suffix if compression else "")
        name += ".age" if encrypted else ""
    return head + sep + name


def part_key(artifact_key: str, section: str, index: int = 0) -> str:
    """Key of a part of a parallel backup beside its first (pre-data) archive.

    ``.../20240501T030000Z-1a2b3c4d.dump.zst.age`` -> ``...-1a2b3c4d.data-2.dump.zst.age``
    (``section`` "data", ``index`` 2) or ``...-1a2b3c4d.post-data.dump.zst.age``; the
    same before ``.sql`` for MySQL.
    """
    infix = f".data-{index}" if section == "data" else f".{section}"
    head, sep, name = artifact_key.rpartition("/")
    i = max(_dump_token(name), _dump_token(name, ".sql"))
    name = name[:i] + infix + name[i:] if i >= 0 else name + infix
    return head + sep + name


def backup_object_keys(artifact_key: str, manifest: Manifest | None = None) -> list[str]:
    """Every object that belongs to the backup of ``artifact_key``, its manifest last:
    the artifact, the other parts of a parallel backup, the cluster globals beside it
    (as recorded, and where the naming scheme puts them), the manifest."""
    keys = [artifact_key]
    if manifest is not None:
        keys += [p.key for p in manifest.parts]
    if manifest is not None and manifest.globals is not None and manifest.globals.key:
        keys.append(manifest.globals.key)
    if _dump_token(artifact_key.rpartition("/")[2]) >= 0:
        keys.append(globals_key(artifact_key))
    keys.append(manifest_key(artifact_key))
    return list(dict.fromkeys(keys))


async def delete_backup_objects(storage: StorageBackend, artifact_key: str) -> list[str]:
    """Delete every object of one backup, the manifest last (so an interruption leaves
    a manifest whose artifact is missing, reported as invalid, never an orphan that
    looks like data). Absent objects are not an error. Returns the keys deleted."""
    manifest: Manifest | None = None
    with contextlib.suppress(BackupError):
        manifest = await read_manifest(storage, artifact_key)
    keys = backup_object_keys(artifact_key, manifest)
    for key in keys:
        await storage.delete(key)
    return keys


def globals_restore_command(*, key: str, compression: Compression, encrypted: bool) -> str:
    """The one-line restore of the cluster globals with standard tools."""
    parts = _decode(shlex.quote(key.rsplit("/", 1)[-1]), compression, encrypted)
    parts.append("psql -v ON_ERROR_STOP=0 --dbname=postgres")
    return " | ".join(parts)


def _decode(name: str, compression: Compression, encrypted: bool) -> list[str]:
    """The shell pipeline that reads one stored object back to its dump bytes."""
    parts = [f"age -d -i key.txt {name}"] if encrypted else [f"cat {name}"]
    if compression is Compression.ZSTD:
        parts.append("zstd -d")
    elif compression is Compression.GZIP:
        parts.append("gzip -d")
    return parts


def restore_command(
    *, key: str, dump_format: str, compression: Compression, encrypted: bool, database: str
) -> str:
    """The documented one-line restore with standard tools only."""
    parts = _decode(shlex.quote(key.rsplit("/", 1)[-1]), compression, encrypted)
    db = shlex.quote(database)
    tail = {
        "pg_custom": f"pg_restore --exit-on-error --single-transaction --dbname={db}",
        "mysql_sql": f"mariadb {db}",
        "sqlite_db": f"cat > {db}",
        "tar": "tar -xpf - -C TARGET_DIR",
    }.get(dump_format, "cat > dump")
    parts.append(tail)
    return " | ".join(parts)


def parts_restore_command(*, key: str, database: str) -> str:
    """A parallel backup's restore with standard tools: the documented script
    (docs/restore-parts.sh: age, zstd, pg_restore) run beside the parts."""
    name = shlex.quote(key.rsplit("/", 1)[-1])
    return f"sh restore-parts.sh {name} {shlex.quote(database)} key.txt"


def mysql_parts_restore_command(
    *, keys: Sequence[str], compression: Compression, encrypted: bool, database: str
) -> str:
    """A parallel MySQL backup's parts, in order, are one SQL dump: decoded one after
    the other into one client."""
    names = " ".join(shlex.quote(k.rsplit("/", 1)[-1]) for k in keys)
    decode = " | ".join(_decode('"$f"', compression, encrypted))
    return f"for f in {names}; do {decode}; done | mariadb {shlex.quote(database)}"


def build_manifest(
    *,
    key: str,
    plan: DumpPlan,
    size_bytes: int,
    original_size_bytes: int,
    sha256: str,
    compression: Compression,
    recipients: tuple[str, ...],
    started_at: datetime,
    finished_at: datetime,
    tool_versions: dict[str, str],
    row_counts: RowCounts | None = None,
    labels: dict[str, str] | None = None,
    globals_info: GlobalsInfo | None = None,
    parts: tuple[PartInfo, ...] = (),
) -> Manifest:
    encryption = (
        EncryptionInfo(
            "age",
            tuple({"recipient": r, "key_id": key_id(r)} for r in recipients),
        )
        if recipients
        else None
    )
    return Manifest(
        key=key,
        engine=plan.engine.value,
        dump_format=plan.dump_format,
        database=plan.database,
        server_version=plan.server_version,
        tool=plan.tool,
        tool_versions=dict(tool_versions),
        size_bytes=size_bytes,
        original_size_bytes=original_size_bytes,
        sha256=sha256,
        compression=compression.value,
        encryption=encryption,
        started_at=started_at.isoformat(),
        created_at=finished_at.isoformat(),
        duration_seconds=round((finished_at - started_at).total_seconds(), 3),
        restore_command=mysql_parts_restore_command(
            keys=[p.key for p in parts],
            compression=compression,
            encrypted=bool(recipients),
            database=plan.database,
        )
        if parts and plan.dump_format == "mysql_sql"
        else parts_restore_command(key=key, database=plan.database)
        if parts
        else restore_command(
            key=key,
            dump_format=plan.dump_format,
            compression=compression,
            encrypted=bool(recipients),
            database=plan.database,
        ),
        row_counts=row_counts,
        labels=dict(labels or {}),
        globals=globals_info,
        parts=parts,
    )


async def write_manifest(storage: StorageBackend, manifest: Manifest) -> str:
    """Write ``<key>.manifest.json`` atomically; return its key."""
    mkey = manifest_key(manifest.key)
    writer = await storage.open_writer(mkey)
    async with writer:
        await writer.write(manifest.to_json())
        await writer.commit()
    return mkey


async def read_manifest(storage: StorageBackend, key: str) -> Manifest:
    """The manifest of artifact ``key`` (or of the manifest key itself)."""
    artifact = key[: -len(MANIFEST_SUFFIX)] if key.endswith(MANIFEST_SUFFIX) else key
    mkey = manifest_key(artifact)
    try:
        info = await storage.stat(mkey)
        if info.size > MAX_MANIFEST:
            raise BackupError(ErrorCode.MANIFEST_INVALID, f"{mkey} is too large")
        reader = await storage.open_reader(mkey)
        async with reader:
            chunks = []
            while chunk := await reader.read():
                chunks.append(chunk)
    except StorageError as exc:
        code = ErrorCode.ARTIFACT_MISSING if exc.code == "not_found" else ErrorCode.STORAGE_FAILED
        raise BackupError(code, f"cannot read manifest {mkey}: {exc.message}") from exc
    return Manifest.from_json(b"".join(chunks), expected_key=artifact)


@dataclass(frozen=True, slots=True)
class CatalogScan:
    #: Usable backups: a valid manifest whose object exists with the recorded size.
    manifests: list[Manifest]
    #: (manifest key, reason) for manifests that cannot be trusted.
    invalid: list[tuple[str, str]]
    #: Objects without a manifest (interrupted before the manifest, or foreign files).
    orphans: list[str]
    #: (object key, problem) for usable backups whose auxiliary object (cluster
    #: globals) is missing or has the wrong size.
    warnings: list[tuple[str, str]] = field(default_factory=list)


async def scan_catalog(storage: StorageBackend, prefix: str = "") -> CatalogScan:
    """List every manifest under ``prefix`` to rebuild a catalog from storage alone."""
    objects: dict[str, int] = {}
    manifests: list[str] = []
    async for info in storage.list(prefix):
        if info.key.endswith(MANIFEST_SUFFIX):
            manifests.append(info.key)
        else:
            objects[info.key] = info.size
    good: list[Manifest] = []
    invalid: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    described: set[str] = set()
    for mkey in manifests:
        artifact = mkey[: -len(MANIFEST_SUFFIX)]
        try:
            m = await read_manifest(storage, artifact)
        except BackupError as exc:
            # Whatever the naming scheme puts beside it is still part of this backup.
            described.update(backup_object_keys(artifact))
            invalid.append((mkey, exc.message))
            continue
        described.update(backup_object_keys(artifact, m))
        size = objects.get(artifact)
        if size is None:
            invalid.append((mkey, "the artifact is missing"))
        elif size != m.size_bytes:
            invalid.append((mkey, f"the artifact is {size} bytes, expected {m.size_bytes}"))
        elif problem := _missing_part(m, objects):
            invalid.append((mkey, problem))
        else:
            good.append(m)
            g = m.globals
            if g is not None and g.saved and g.key is not None:
                gsize = objects.get(g.key)
                if gsize is None:
                    warnings.append((g.key, "the cluster globals object is missing"))
                elif gsize != g.size_bytes:
                    warnings.append(
                        (g.key, f"the cluster globals are {gsize} bytes, expected {g.size_bytes}")
                    )
    good.sort(key=lambda m: m.created_at)
    orphans = sorted(k for k in objects if k not in described)
    return CatalogScan(good, invalid, orphans, warnings)


def _missing_part(m: Manifest, objects: dict[str, int]) -> str:
    """Why a part of a parallel backup cannot be used ('' when all are there)."""
    for p in m.parts[1:]:
        size = objects.get(p.key)
        if size is None:
            return f"part {p.order} ({p.key}) is missing"
        if size != p.size_bytes:
            return f"part {p.order} ({p.key}) is {size} bytes, expected {p.size_bytes}"
    return ""


# --------------------------------------------------------------------------- row counts


def _parse_counts(out: bytes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in out.decode("utf-8", "replace").splitlines():
        name, sep, value = line.rpartition("\t")
        if sep and name:
            counts[name] = int(float(value))
    return counts


async def _pg_row_counts(source: PostgresSource, runner: CommandRunner, limit: int) -> RowCounts:
    tools = await find_pg_tools(runner, "psql", source.bin_globs)
    if not tools:
        raise BackupError(ErrorCode.TOOL_MISSING, "psql is not installed", stage="row_counts")
    psql = tools[0].path
    # One statement: exact count(*) for tables estimated small, the estimate otherwise.
    # Identifiers are quoted by format(%I); the only interpolation is an int.
    sql = f"""
    with t as (
      select c.oid, n.nspname, c.relname, greatest(c.reltuples, 0)::bigint as est,
             c.reltuples < 0 as never_analyzed
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema')
        and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%'
    )
    select format('%s.%s', nspname, relname),
           case when never_analyzed or est <= {int(limit)}
                then (xpath('/row/c/text()', query_to_xml(
                        format('select count(*) as c from %I.%I', nspname, relname),
                        false, true, '')))[1]::text::bigint
                else -est - 1 end
    from t order by 1
    """  # noqa: S608
    res = await runner.run(psql_command(psql, source.conn, sql), limit_seconds=600)
    if res.returncode != 0:
        raise BackupError(
            ErrorCode.DUMP_FAILED, "row counts failed", stage="row_counts", detail=res.stderr
        )
    raw = _parse_counts(res.stdout)
    tables = {k: (v if v >= 0 else -v - 1) for k, v in raw.items()}
    estimated = tuple(k for k, v in raw.items() if v < 0)
    return RowCounts(tables, estimated, datetime.now(UTC).isoformat())


async def _mysql_row_counts(source: MySQLSource, runner: CommandRunner, limit: int) -> RowCounts:
    client, _ = await resolve_mysql_tool(runner, ("mariadb", "mysql"))
    conn = source.conn

    async def query(sql: str) -> bytes:
        cmd = mysql_client_command(
            client, conn, "--batch", "--skip-column-names", "-e", sql, database=conn.database
        )
        res = await runner.run(cmd, limit_seconds=600)
        if res.returncode != 0:
            raise BackupError(
                ErrorCode.DUMP_FAILED, "row counts failed", stage="row_counts", detail=res.stderr
            )
        return res.stdout

    listing = await query(
        "SELECT TABLE_NAME, COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
    )
    estimates = _parse_counts(listing)
    small = [t for t, est in estimates.items() if est <= limit]
    tables = dict(estimates)
    if small:
        union = " UNION ALL ".join(
            f"SELECT {mysql.quote_literal(t)}, COUNT(*) FROM {mysql.quote_ident(t)}"  # noqa: S608 (quoted)
            for t in small
        )
        tables.update(_parse_counts(await query(union)))
    estimated = tuple(t for t in estimates if t not in small)
    return RowCounts(tables, estimated, datetime.now(UTC).isoformat())


async def collect_row_counts(
    source: DumpSource, runner: CommandRunner, *, exact_max_rows: int = EXACT_COUNT_MAX_ROWS
) -> RowCounts | None:
    """Per-table row counts for PostgreSQL/MySQL sources (``None`` for other engines).

    Exact ``count(*)`` for tables the catalog estimates at most ``exact_max_rows``
    rows, the catalog estimate (listed in ``estimated``) for bigger ones. Counted in
    a separate transaction just before the dump: on a busy database they may differ
    slightly from the dump's snapshot.
    """
    if isinstance(source, PostgresSource):
        return await _pg_row_counts(source, runner, exact_max_rows)
    if isinstance(source, MySQLSource):
        return await _mysql_row_counts(source, runner, exact_max_rows)
    return None

"""Cost file imports: the upload is streamed to a temp file (hashed on the way, constant
memory), its header checked before anything is written, and the rows are then imported
by a job in batches. Until the job has written the import's roll-ups nothing of it is
counted anywhere, and a job that fails removes every line it wrote: a file is either
imported whole (minus its reported rejected rows) or not at all."""

from __future__ import annotations

import asyncio
import codecs
import csv
import hashlib
import io
import json
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, func, insert, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import utcnow
from opscenter.core.db import Database
from opscenter.core.errors import InvalidInput, PayloadTooLarge
from opscenter.finops import formats
from opscenter.finops.formats import LINE_COLUMNS, Format, Groups, Line, RowError
from opscenter.models import CostImport, CostLine, CostRollup, CostRollupPart, CostTagSet
from opscenter.models.finops import ImportStatus

MAX_IMPORT_BYTES = 4 * 1024**3
BATCH_ROWS = 5000
MAX_REJECTED_KEPT = 1000
REMEMBERED = 10_000  # distinct values a cache of the reading thread keeps, at most
CHUNK = 1024 * 1024
T = TypeVar("T")
#: Lines rolled up at a time (parts), while the next batches are read and written: the
#: import's last commit only sums the parts (a few per day and value), not its lines.
ROLLUP_ROWS = 10 * BATCH_ROWS
#: A line's columns as COPY writes them: its import's, then the parsed line's in the order
#: of their groups (`formats.Groups`: dates and times, names, tags), its tag set's number
#: with its tags, then the per-row columns.
COPY_COLUMNS = [
    "import_id",
    "team_id",
    "billing_period_start",
    "charge_period_start",
    "charge_period_end",
    "charge_day",
    "charge_category",
    "provider",
    "service",
    "region",
    "currency",
    "environment",
    "tag_set",
    "resource_id",
    "resource_name",
    "billed_cost",
    "effective_cost",
]
#: The dimensions rolled up per day; `category` holds each line once, so it gives totals.
DIMENSIONS = {
    "category": CostLine.charge_category,
    "service": CostLine.service,
    "provider": CostLine.provider,
    "environment": CostLine.environment,
    "region": CostLine.region,
}
SUMS = ["day", "dimension", "value", "currency", "billed_cost", "effective_cost", "lines"]
PART_COLUMNS = ["import_id", *SUMS]
# One part: the import's lines with ids in (after, upto], which are the lines written
# since the last part (ids grow; other imports' lines in the range are not theirs).
# SQLite: a statement per dimension, then the tag sets expanded with its JSON function;
# `+import_id` (and `import_id + 0` in `_roll_up`) keeps SQLite on the id range, off the
# import's index (all of the import's lines).
TAG_PART_SQLITE = (
    "INSERT INTO cost_rollup_parts (import_id, day, dimension, value, currency,"
    " billed_cost, effective_cost, lines)"
    " SELECT :i, l.charge_day, 'tag:' || t.key, t.value, l.currency,"
    " sum(l.billed_cost), sum(l.effective_cost), count(*)"
    " FROM cost_lines AS l JOIN cost_tag_sets AS s"
    " ON s.import_id = :i AND s.number = l.tag_set CROSS JOIN json_each(s.tags) AS t"
    " WHERE l.id > :after AND l.id <= :upto AND +l.import_id = :i"
    " GROUP BY l.charge_day, t.key, t.value, l.currency"
)
# PostgreSQL rolls every dimension of DIMENSIONS and the tag sets up in one scan (grouping
# sets); only the few per-day tag sets are then expanded into their tags, not every line.
# `dims` is the GROUPING bit mask: 0 where a set groups by that column (31: the tag sets).
PART_PG = """
WITH g AS (
    SELECT charge_day, currency,
        charge_category, service, provider, environment, region, tag_set,
        GROUPING(charge_category, service, provider, environment, region) AS dims,
        sum(billed_cost) AS billed, sum(effective_cost) AS effective, count(*) AS lines
    FROM cost_lines WHERE id > :after AND id <= :upto AND import_id = :i
    GROUP BY charge_day, currency, GROUPING SETS
        ((charge_category), (service), (provider), (environment), (region), (tag_set))
)
INSERT INTO cost_rollup_parts
    (import_id, day, dimension, value, currency, billed_cost, effective_cost, lines)
SELECT :i, charge_day,
    CASE dims WHEN 15 THEN 'category' WHEN 23 THEN 'service' WHEN 27 THEN 'provider'
              WHEN 29 THEN 'environment' ELSE 'region' END,
    COALESCE(CASE dims WHEN 15 THEN charge_category WHEN 23 THEN service
                       WHEN 27 THEN provider WHEN 29 THEN environment ELSE region END, ''),
    currency, billed, effective, lines
FROM g WHERE dims <> 31
UNION ALL
SELECT :i, charge_day, 'tag:' || t.key, t.value, currency,
    sum(billed), sum(effective), sum(lines)
FROM g JOIN cost_tag_sets AS s ON s.import_id = :i AND s.number = g.tag_set
    CROSS JOIN jsonb_each_text(s.tags) AS t
WHERE dims = 31
GROUP BY charge_day, t.key, t.value, currency
"""


class BadCostFile(InvalidInput):
    code = "INVALID_COST_FILE"


#: The job failure codes of a file that is not what it says (already discarded).
FAILURE_CODES = frozenset({"encoding", "malformed_csv", "no_rows", "not_this_format", "gone"})


class ImportFailed(Exception):
    """The file is not what it says: the whole import is refused."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Upload:
    path: Path
    sha256: str
    size: int


def imports_dir(data_dir: Path) -> Path:
    return data_dir / "finops-imports"


async def receive(chunks: AsyncIterator[bytes], data_dir: Path) -> Upload:
    """Write the body to a server-named temp file, hashing it; 413 past the limit."""
    folder = imports_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.csv.part"
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_IMPORT_BYTES:
                    raise PayloadTooLarge(f"A cost file may hold at most {MAX_IMPORT_BYTES} bytes")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise BadCostFile("The file is empty: send the CSV file as the request body")
    return Upload(path, digest.hexdigest(), size)


_WIDE_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


def check_header(path: Path, wanted: str | None) -> tuple[Format, list[str]]:
    """The file's format (the one asked for, or the one its header shows) and header."""
    with path.open("rb") as raw:
        first = raw.readline(CHUNK)  # only the header: the rows are the job's to judge
    for bom, name in _WIDE_BOMS.items():
        if first.startswith(bom):
            raise BadCostFile(f"The file is {name}; export it as UTF-8 and upload it again")
    try:
        header = next(csv.reader([first.decode("utf-8-sig")]), [])
    except UnicodeDecodeError:
        raise BadCostFile("The header is not UTF-8; export the file as UTF-8") from None
    except csv.Error as err:
        raise BadCostFile(f"The file is not CSV: {err}") from None
    if not any(h.strip() for h in header):
        raise BadCostFile("The first line must be the CSV header (column names)")
    if wanted is not None:
        fmt = formats.FORMATS[wanted]
        if absent := formats.missing(fmt, header):
            seen = formats.detect(header)
            hint = f"; it looks like {seen.label} (format={seen.name})" if seen else ""
            raise BadCostFile(
                f"The header is not a {fmt.label} header: missing {', '.join(absent)}{hint}"
            )
        return fmt, header
    fmt_found = formats.detect(header)
    if fmt_found is None:
        need = "; ".join(f"{f.name}: {', '.join(f.required)}" for f in formats.FORMATS.values())
        raise BadCostFile(f"Unknown cost file: the header has none of the column sets ({need})")
    return fmt_found, header


# -- reading (in a worker thread) -----------------------------------------------------------
@dataclass
class Progress:
    rows: int = 0
    rejected: int = 0
    kept: list[dict[str, Any]] = field(default_factory=list)
    bytes_read: int = 0

    def reject(self, line: int, column: str | None, reason: str) -> None:
        self.rejected += 1
        if len(self.kept) < MAX_REJECTED_KEPT:
            self.kept.append({"line": line, "column": column, "reason": reason})


class _Counting(io.RawIOBase):
    def __init__(self, raw: io.BufferedReader, progress: Progress) -> None:
        self.raw, self.progress = raw, progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.progress.bytes_read += n
        return n


def read_batches(
    path: Path, progress: Progress, converter: Callable[[list[str]], Callable[[list[str]], T]]
) -> Iterator[list[T]]:
    """The rows made into lines (or whatever `converter(header)` makes of a row) in
    batches; rejected rows go to `progress`. Raises ImportFailed when the file is not
    UTF-8 or not CSV past its header."""
    with path.open("rb") as raw:
        stream = io.TextIOWrapper(
            io.BufferedReader(_Counting(raw, progress), CHUNK), encoding="utf-8-sig", newline=""
        )
        reader = csv.reader(stream)
        try:
            header = next(reader)
            convert, width = converter(header), len(header)
            batch: list[T] = []
            for row in reader:
                progress.rows += 1
                if len(row) != width:
                    if not any(row):
                        progress.rows -= 1  # a blank line is no row
                        continue
                    progress.reject(reader.line_num, None, f"{len(row)} fields, header has {width}")
                    continue
                try:
                    batch.append(convert(row))
                except RowError as err:
                    progress.reject(reader.line_num, err.column, err.reason)
                    continue
                if len(batch) >= BATCH_ROWS:
                    yield batch
                    batch = []
            if batch:
                yield batch
        except UnicodeDecodeError:
            raise ImportFailed(
                "encoding",
                f"The file is not UTF-8 (after line {reader.line_num}); export it as UTF-8",
            ) from None
        except csv.Error as err:
            raise ImportFailed(
                "malformed_csv", f"The file is not valid CSV at line {reader.line_num}: {err}"
            ) from None


class TagSets:
    """Numbers the distinct tag sets of one import's lines, from 1. The parser shares one
    dict between the lines of equal tags text, so a set is mostly found by the dict's id
    (the dict is kept, so its id is not reused), else by its content. Both maps are
    bounded (memory stays flat): past that, an equal set may get a second number, which
    the roll-ups merge again (they group by tag key and value)."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[int, dict[str, str]]] = {}
        self._by_text: dict[str, int] = {}
        self.count = 0
        self.new: list[tuple[int, dict[str, str]]] = []  # not yet written

    def number(self, tags: dict[str, str]) -> int:
        found = self._by_id.get(id(tags))
        if found is not None:
            return found[0]
        key = json.dumps(tags, sort_keys=True)
        number = self._by_text.get(key)
        if number is None:
            if len(self._by_text) >= REMEMBERED:
                self._by_text.clear()
            self.count += 1
            number = self._by_text[key] = self.count
            self.new.append((number, tags))
        if len(self._by_id) >= REMEMBERED:
            self._by_id.clear()
        self._by_id[id(tags)] = (number, tags)
        return number


_NULL = b"\xff\xff\xff\xff"  # length -1
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # PostgreSQL's binary dates and times count from it
_EPOCH_DAY = _EPOCH.toordinal()
_INT4 = struct.Struct(">ii")
_INT8 = struct.Struct(">iq")
_AMOUNTS = struct.Struct(">iqiq")  # billed, effective: int8 fields
_NAMELESS_AMOUNTS = struct.Struct(">iiqiq")  # a NULL resource name, then the amounts
#: A text field's length prefix by its length in bytes (a resource id: at most 1024
#: characters, so 4096 bytes).
_LENGTHS = [n.to_bytes(4) for n in range(4097)]


def _text_field(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return len(data).to_bytes(4) + data


def _time_field(value: datetime) -> bytes:
    delta = value - _EPOCH
    return _INT8.pack(8, (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


def _date_field(value: date) -> bytes:
    return b"\x00\x00\x00\x04" + (value.toordinal() - _EPOCH_DAY).to_bytes(4, signed=True)


class _Remembered(dict[Any, bytes]):
    """The encoded part of a line by the texts it was made from; bounded."""

    def put(self, key: Any, value: bytes) -> bytes:
        if len(self) >= REMEMBERED:
            self.clear()
        self[key] = value
        return value


def _key(positions: tuple[int, ...]) -> Callable[[list[str]], Any]:
    """A row's texts at `positions`, as one dict key."""
    if not positions:
        return lambda row: ""
    return itemgetter(*positions)


class CopyEncoder:
    """An import's lines as PostgreSQL binary COPY data, in COPY_COLUMNS order, one line's
    bytes per row. asyncpg's copy_records_to_table encodes every value anew (half the
    Python time of an import); here each distinct group of texts of a format with
    `formats.Groups` (the dates and times, the names, the tags) is parsed, checked and
    encoded once, and a row costs three lookups, its amounts and its resource id. Any
    other row (a format without groups, a group not seen yet, an amount that is not a
    plain number) goes through the format's parser, so its line or its rejection is the
    parser's own."""

    HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
    TRAILER = b"\xff\xff"

    def __init__(self, import_id: int, team_id: int, tag_sets: TagSets) -> None:
        fields = len(COPY_COLUMNS).to_bytes(2)
        self._head = fields + struct.pack(">iiii", 4, import_id, 4, team_id)
        self.tag_sets = tag_sets

    def _times(self, line: Line) -> bytes:
        billing, start, end, day = line[:4]
        return (
            self._head + _date_field(billing) + _time_field(start) + _time_field(end)
            + _date_field(day)
        )  # fmt: skip

    @staticmethod
    def _names(line: Line) -> bytes:
        category, provider, service, region, _, code = line[4:10]
        return b"".join(map(_text_field, (category, provider, service, region, code)))

    def _tags(self, line: Line) -> bytes:
        return _text_field(line[8]) + _INT4.pack(4, self.tag_sets.number(line[14]))

    def line(self, line: Line) -> bytes:
        """One parsed line's COPY data."""
        return self._join(line, self._times(line), self._names(line), self._tags(line))

    @staticmethod
    def _join(line: Line, times: bytes, names: bytes, tags: bytes) -> bytes:
        resource_id, resource_name, billed, effective = line[10:14]
        return b"".join(
            (
                times,
                names,
                tags,
                _text_field(resource_id),
                _text_field(resource_name),
                _AMOUNTS.pack(8, billed, 8, effective),
            )
        )

    def converter(self, fmt: Format) -> Callable[[list[str]], Callable[[list[str]], bytes]]:
        """For `read_batches`: from the header, what makes a row its line's COPY data."""

        def convert(header: list[str]) -> Callable[[list[str]], bytes]:
            parse, groups = formats.row_parser(fmt, header), formats.row_groups(fmt, header)
            if groups is None:
                return lambda row: self.line(parse(row))
            return self._rows(parse, groups)

        return convert

    def _rows(
        self, parse: Callable[[list[str]], Line], groups: Groups
    ) -> Callable[[list[str]], bytes]:
        times, names, tags = _Remembered(), _Remembered(), _Remembered()
        times_of, names_of = _key(groups.times), _key(groups.names)
        tags_at, id_at, name_at = groups.tags, groups.resource_id, groups.resource_name
        billed_at, effective_at = groups.billed, groups.effective
        time_part, name_part, tags_part = times.get, names.get, tags.get
        lengths, scale, amounts = _LENGTHS, formats.SCALE, _NAMELESS_AMOUNTS.pack

        def parsed(row: list[str]) -> bytes:
            # The parser's line, or its rejection; its groups are remembered for the rows
            # that repeat them.
            line = parse(row)
            return self._join(
                line,
                times.put(times_of(row), self._times(line)),
                names.put(names_of(row), self._names(line)),
                tags.put("" if tags_at is None else row[tags_at], self._tags(line)),
            )

        def convert(row: list[str]) -> bytes:
            t = time_part(times_of(row))
            n = name_part(names_of(row))
            g = tags_part("" if tags_at is None else row[tags_at])
            if t is None or n is None or g is None:
                return parsed(row)
            # formats.money's plain case ("123.45"), written out here, for the billed and
            # then the effective amount (a call per amount was 3 % of an import); anything
            # else is the parser's to read or reject.
            text = row[billed_at]
            whole, _, fraction = text.partition(".")
            if not (0 < len(whole) <= 9 and len(fraction) <= 9):
                return parsed(row)
            digits = whole + fraction
            if not (digits.isdigit() and digits.isascii()):
                return parsed(row)
            billed = effective = int(digits) * scale[len(fraction)]
            if row[effective_at] != text:  # mostly the same text: no discount
                text = row[effective_at]
                whole, _, fraction = text.partition(".")
                if not (0 < len(whole) <= 9 and len(fraction) <= 9):
                    return parsed(row)
                digits = whole + fraction
                if not (digits.isdigit() and digits.isascii()):
                    return parsed(row)
                effective = int(digits) * scale[len(fraction)]
            # The resource id and name as the parser reads them, encoded as they come.
            resource_id = "" if id_at is None else row[id_at].strip()[:1024]
            data = resource_id.encode()
            length = lengths[len(data)] if data else _NULL
            if name_at is None:
                return b"".join((t, n, g, length, data, amounts(-1, 8, billed, 8, effective)))
            name = row[name_at].strip()[:1024].encode()
            return b"".join(
                (
                    t, n, g, length, data, lengths[len(name)] if name else _NULL, name,
                    _AMOUNTS.pack(8, billed, 8, effective),
                )
            )  # fmt: skip

        return convert


@dataclass
class Batch:
    """What the reading thread hands over: a batch of lines ready to write."""

    lines: int
    tag_sets: list[dict[str, Any]]  # the sets first seen in this batch, as rows
    copy: bytes = b""  # PostgreSQL: the lines as binary COPY data
    rows: list[dict[str, Any]] = field(default_factory=list)  # SQLite: the lines as rows


def prepare(
    path: Path, fmt: Format, progress: Progress, import_id: int, team_id: int, copy: bool
) -> Iterator[Batch]:
    """The file's lines in batches ready to write, made in the reading thread: the tag
    sets numbered, and the lines encoded for COPY (PostgreSQL) or as rows (SQLite)."""
    sets = TagSets()

    def new_sets() -> list[dict[str, Any]]:
        new = [{"import_id": import_id, "number": n, "tags": t} for n, t in sets.new]
        sets.new.clear()
        return new

    if copy:
        encoder = CopyEncoder(import_id, team_id, sets)
        for encoded in read_batches(path, progress, encoder.converter(fmt)):
            data = b"".join((CopyEncoder.HEADER, *encoded, CopyEncoder.TRAILER))
            yield Batch(len(encoded), new_sets(), copy=data)
        return
    for lines in read_batches(path, progress, lambda header: formats.row_parser(fmt, header)):
        rows = [
            {
                **dict(zip(LINE_COLUMNS, line, strict=False)),
                "import_id": import_id,
                "team_id": team_id,
                "tag_set": sets.number(line[-1]),
            }
            for line in lines
        ]
        yield Batch(len(lines), new_sets(), rows=rows)


# -- writing --------------------------------------------------------------------------------
async def _write_lines(session: AsyncSession, batch: Batch) -> None:
    if batch.tag_sets:
        await session.execute(insert(CostTagSet), batch.tag_sets)
    if batch.copy:  # PostgreSQL: `run` had the reading thread encode the lines for COPY
        # COPY: an order of magnitude faster than INSERTs for a million lines.
        # A batch need not wait for its WAL flush: until the import's last commit (a durable
        # one, after every batch's) its lines are invisible, and a crash discards them.
        await session.execute(text("SET LOCAL synchronous_commit = off"))
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        # A memoryview: asyncpg would take bytes for a file name.
        await raw.driver_connection.copy_to_table(  # type: ignore[union-attr]
            "cost_lines", source=memoryview(batch.copy), columns=COPY_COLUMNS, format="binary"
        )
    else:
        await session.execute(insert(CostLine), batch.rows)


async def _last_line(session: AsyncSession) -> int:
    """The highest line id written so far (visible to this session): every line written
    after it gets a higher one (SQLite's AUTOINCREMENT; PostgreSQL's serial, whose
    sequence caches no ids per session, so ids grow across the pool's connections)."""
    return int(await session.scalar(select(func.max(CostLine.id))) or 0)


async def _roll_up(session: AsyncSession, import_id: int, after: int, upto: int) -> None:
    """One part: the daily sums of the import's lines with ids in (after, upto]."""
    if upto <= after:
        return
    values = {"i": import_id, "after": after, "upto": upto}
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text(PART_PG), values)
        return
    day, currency = CostLine.charge_day, CostLine.currency
    for name, column in DIMENSIONS.items():
        value = func.coalesce(column, "")
        sums = (
            select(
                literal(import_id),
                day,
                literal(name),
                value,
                currency,
                func.sum(CostLine.billed_cost),
                func.sum(CostLine.effective_cost),
                func.count(),
            )
            .where(CostLine.id > after, CostLine.id <= upto, CostLine.import_id + 0 == import_id)
            .group_by(day, value, currency)
        )
        await session.execute(insert(CostRollupPart).from_select(PART_COLUMNS, sums))
    await session.execute(text(TAG_PART_SQLITE), values)


async def _roll_up_apart(db: Database, import_id: int, after: int, upto: int) -> None:
    async with db.write_session() as session:
        await _roll_up(session, import_id, after, upto)
        await session.commit()


async def _write_rollups(session: AsyncSession, import_id: int, team_id: int) -> None:
    """The import's roll-ups: its parts summed (an equal tag set under two numbers, or a
    day over two parts, becomes one row), and the parts removed."""
    part = CostRollupPart
    key = (part.day, part.dimension, part.value, part.currency)
    sums = (
        select(
            part.import_id,
            literal(team_id),
            *key,
            func.sum(part.billed_cost),
            func.sum(part.effective_cost),
            func.sum(part.lines),
        )
        .where(part.import_id == import_id)
        .group_by(part.import_id, *key)
    )
    await session.execute(insert(CostRollup).from_select(["import_id", "team_id", *SUMS], sums))
    await session.execute(delete(CostRollupPart).where(CostRollupPart.import_id == import_id))


ProgressHook = Any  # an async callable (percent: float) -> None


async def run(
    db: Database, import_id: int, path: Path, progress: Progress, on_progress: ProgressHook
) -> None:
    """Import the file into lines, then its roll-ups; raises ImportFailed (the caller
    then calls `discard`)."""
    async with db.write_session() as session:
        imp = await session.get(CostImport, import_id)
        if imp is None:
            raise ImportFailed("gone", "The import was deleted before it ran")
        imp.status = ImportStatus.RUNNING
        fmt, team_id, size = formats.FORMATS[imp.format], imp.team_id, imp.size_bytes
        await session.commit()
    batches = prepare(path, fmt, progress, import_id, team_id, copy=not db.is_sqlite)
    imported, pending = 0, 0
    async with db.read_session() as session:
        after = await _last_line(session)
    # Parsing runs in a thread (the server keeps answering during a big import), one batch
    # ahead: the next batch is parsed while the database writes this one. Every
    # ROLLUP_ROWS lines, the lines written since the last part are rolled up into one in
    # a session of its own, beside the next batches (on PostgreSQL: a second backend,
    # on the core the reading thread leaves); one part at a time, in order.
    ahead = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    rolling: asyncio.Future[None] | None = None
    try:
        while (batch := await ahead) is not None:
            ahead = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            async with db.write_session() as session:
                await _write_lines(session, batch)
                pending += batch.lines
                upto = await _last_line(session) if pending >= ROLLUP_ROWS else after
                await session.commit()
            imported += batch.lines
            if upto > after:
                if rolling is not None:
                    await rolling
                rolling = asyncio.ensure_future(_roll_up_apart(db, import_id, after, upto))
                after, pending = upto, 0
            await on_progress(100.0 * progress.bytes_read / max(size, 1))
        if rolling is not None:
            await rolling
    finally:
        for task in (ahead, rolling):
            if task is not None and not task.done():
                await asyncio.wait([task])  # a thread cannot be cancelled: let it end
            if task is not None and task.done() and not task.cancelled():
                task.exception()  # retrieved: a failure here is the one already raised
    if progress.rows == 0:
        raise ImportFailed("no_rows", "The file has a header but no rows")
    if progress.rejected * 2 > progress.rows:
        example = progress.kept[0] if progress.kept else {}
        raise ImportFailed(
            "not_this_format",
            f"{progress.rejected} of {progress.rows} rows were rejected, so this is not a"
            f" usable {fmt.label} file (line {example.get('line')}, column"
            f" {example.get('column')}: {example.get('reason')}); nothing was imported",
        )
    async with db.write_session() as session:
        await _roll_up(session, import_id, after, await _last_line(session))
        await _write_rollups(session, import_id, team_id)
        await session.execute(
            update(CostImport)
            .where(CostImport.id == import_id)
            .values(
                status=ImportStatus.COMPLETED,
                rows_total=progress.rows,
                rows_imported=imported,
                rows_rejected=progress.rejected,
                rejected=progress.kept,
                completed_at=utcnow(),
                error=None,
            )
        )
        await session.commit()


async def discard(db: Database, import_id: int, message: str, progress: Progress | None) -> None:
    """Remove every line of a failed import and say why it failed."""
    async with db.write_session() as session:
        await session.execute(delete(CostRollup).where(CostRollup.import_id == import_id))
        await session.execute(delete(CostRollupPart).where(CostRollupPart.import_id == import_id))
        await session.execute(delete(CostLine).where(CostLine.import_id == import_id))
        await session.execute(delete(CostTagSet).where(CostTagSet.import_id == import_id))
        values: dict[str, Any] = {"status": ImportStatus.FAILED, "error": message[:2000]}
        if progress is not None:
            values.update(
                rows_total=progress.rows,
                rows_imported=0,
                rows_rejected=progress.rejected,
                rejected=progress.kept,
            )
        await session.execute(update(CostImport).where(CostImport.id == import_id).values(values))
        await session.commit()


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)

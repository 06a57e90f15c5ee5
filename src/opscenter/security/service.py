"""Security logic: assets (own, and the servers that are assets by themselves), imports
that deduplicate, close and reopen, SLA clocks, risk acceptance and the figures."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, and_, case, func, null, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.errors import Conflict, Forbidden, InvalidInput
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.models import Server
from opscenter.models.security import (
    Finding,
    FindingStatus,
    SecurityAsset,
    SecurityImport,
    Severity,
)
from opscenter.security.importers import ParsedFinding
from opscenter.security.importers.formats import Scanner
from opscenter.security.scan_schemas import ScanSource
from opscenter.security.schemas import (
    AssetIn,
    AssetOut,
    AssetUpdate,
    FindingOut,
    ImportOut,
    MetricsOut,
    SeverityCount,
    SlaState,
    WeekPoint,
)

BATCH = 1000
UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE
MAX_ACCEPTANCE = timedelta(days=366)
TREND_WEEKS = 12
#: Findings named in one overdue event; the event also carries the full count.
EVENT_IDS = 100


# -- assets ---------------------------------------------------------------------------------
def team_for(principal: Principal, team_id: int | None) -> int:
    """The team a new asset belongs to: the one given (if the caller is in it) or the
    caller's only team."""
    if team_id is not None:
        check_team_access(principal, team_id)
        return team_id
    if len(principal.team_ids) == 1:
        return next(iter(principal.team_ids))
    raise InvalidInput(
        "You belong to no team: give team_id"
        if not principal.team_ids
        else "You belong to several teams: give team_id"
    )


def _rows(*columns: Any) -> Select[Any]:
    """A select of several columns, typed loosely like every statement `readable` takes."""
    return cast("Select[Any]", select(*columns))


def assets_query(principal: Principal, team_id: int | None = None) -> Select[Any]:
    """Keys of every asset the caller sees, by name: own assets, and every server (read
    here at list time, so a server is an asset from the moment it is registered, and its
    name, address and team are always the server's own)."""
    own = readable(
        _rows(
            SecurityAsset.id.label("asset_id"),
            null().label("server_id"),
            SecurityAsset.name.label("name"),
            SecurityAsset.team_id.label("team_id"),
        ).where(SecurityAsset.server_id.is_(None)),
        SecurityAsset,
        principal,
    )
    servers = readable(
        _rows(
            SecurityAsset.id.label("asset_id"),
            Server.id.label("server_id"),
            Server.name.label("name"),
            Server.team_id.label("team_id"),
        ).outerjoin(SecurityAsset, SecurityAsset.server_id == Server.id),
        Server,
        principal,
    )
    keys = own.union_all(servers).subquery()
    stmt = select(keys.c.asset_id, keys.c.server_id)
    if team_id is not None:
        stmt = stmt.where(keys.c.team_id == team_id)
    return stmt.order_by(keys.c.name, keys.c.server_id)


async def asset_page(
    session: AsyncSession, stmt: Select[Any], limit: int, offset: int
) -> tuple[list[AssetOut], int]:
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    keys = (await session.execute(stmt.limit(limit).offset(offset))).all()
    asset_ids = [k.asset_id for k in keys if k.asset_id is not None]
    server_ids = [k.server_id for k in keys if k.server_id is not None]
    assets = {
        a.id: a
        for a in await session.scalars(select(SecurityAsset).where(SecurityAsset.id.in_(asset_ids)))
    }
    servers = {
        s.id: s for s in await session.scalars(select(Server).where(Server.id.in_(server_ids)))
    }
    counts = await open_counts(session, asset_ids)
    out = [
        asset_out(
            assets.get(k.asset_id) if k.asset_id else None,
            servers.get(k.server_id) if k.server_id else None,
            counts.get(k.asset_id, 0),
        )
        for k in keys
    ]
    return out, int(total or 0)


async def open_counts(session: AsyncSession, asset_ids: Sequence[int]) -> dict[int, int]:
    rows = await session.execute(
        select(Finding.asset_id, func.count())
        .where(Finding.asset_id.in_(asset_ids), Finding.status == FindingStatus.OPEN)
        .group_by(Finding.asset_id)
    )
    return {asset_id: count for asset_id, count in rows.all()}


def asset_out(asset: SecurityAsset | None, server: Server | None, open_findings: int) -> AssetOut:
    if server is not None:
        return AssetOut(
            id=asset.id if asset else None,
            server_id=server.id,
            team_id=server.team_id,
            name=server.name,
            kind="database" if server.db_engine or server.type in DB_TYPES else "host",
            environment=server.environment,
            criticality=asset.criticality if asset else "medium",
            address=server.host,
            ports=sorted({p for p in (server.port, server.db_port) if p}),
            tags=dict(server.tags or {}),
            description=server.description,
            open_findings=open_findings,
        )
    assert asset is not None
    return AssetOut(
        id=asset.id,
        server_id=None,
        team_id=asset.team_id,
        name=asset.name,
        kind=asset.kind,
        environment=asset.environment,
        criticality=asset.criticality,
        address=asset.address,
        ports=list(asset.ports),
        tags=dict(asset.tags),
        description=asset.description,
        open_findings=open_findings,
    )


DB_TYPES = {"postgresql", "mysql", "sqlite"}
#: The stored name of a server's asset row (never shown: the server's name is).
SERVER_PREFIX = "server:"


async def get_asset(session: AsyncSession, principal: Principal, asset_id: int) -> SecurityAsset:
    return await get_readable(session, SecurityAsset, asset_id, principal, name="Asset")


async def asset_output(session: AsyncSession, asset: SecurityAsset) -> AssetOut:
    server = await session.get(Server, asset.server_id) if asset.server_id else None
    return asset_out(asset, server, (await open_counts(session, [asset.id])).get(asset.id, 0))


async def _name_free(session: AsyncSession, team_id: int, name: str, own_id: int | None) -> None:
    if name.startswith(SERVER_PREFIX):
        raise InvalidInput(f"Asset names starting with {SERVER_PREFIX!r} are the servers' own")
    taken = await session.scalar(
        select(SecurityAsset.id).where(
            SecurityAsset.team_id == team_id,
            SecurityAsset.name == name,
            SecurityAsset.id != (own_id or 0),
        )
    )
    if taken is not None:
        raise Conflict(f"The team already has an asset named {name!r}")


async def create_asset(session: AsyncSession, principal: Principal, body: AssetIn) -> SecurityAsset:
    team = team_for(principal, body.team_id)
    await _name_free(session, team, body.name, None)
    asset = SecurityAsset(team_id=team, **body.model_dump(exclude={"team_id"}))
    session.add(asset)
    await session.flush()
    return asset


def _own(asset: SecurityAsset) -> None:
    if asset.server_id is not None:
        raise Conflict(
            f"Asset {asset.id} is server {asset.server_id}: it follows the server; "
            "change or delete the server instead"
        )


async def update_asset(
    session: AsyncSession, principal: Principal, asset_id: int, body: AssetUpdate
) -> tuple[SecurityAsset, list[str]]:
    asset = await get_asset(session, principal, asset_id)
    changes = body.model_dump(exclude_unset=True)
    if asset.server_id is not None and set(changes) - {"criticality"}:
        _own(asset)  # only the criticality of a server's asset is the asset's own
    if changes.get("name") and changes["name"] != asset.name:
        await _name_free(session, asset.team_id, changes["name"], asset.id)
    for field, value in changes.items():
        if value is not None:
            setattr(asset, field, value)
    await session.flush()
    return asset, sorted(changes)


async def delete_asset(session: AsyncSession, principal: Principal, asset_id: int) -> SecurityAsset:
    """The asset and its findings and imports (the foreign keys cascade)."""
    asset = await get_asset(session, principal, asset_id)
    _own(asset)
    await session.delete(asset)
    await session.flush()
    return asset


async def asset_of_server(
    session: AsyncSession, principal: Principal, server_id: int
) -> SecurityAsset:
    """The asset row a server's findings hang on, made the first time one is imported."""
    server = await get_readable(session, Server, server_id, principal, name="Server")
    asset = await session.scalar(select(SecurityAsset).where(SecurityAsset.server_id == server.id))
    if asset is None:
        # The row's own name and team are never shown (the server's are); keep them unique.
        asset = SecurityAsset(
            team_id=server.team_id,
            name=f"{SERVER_PREFIX}{server.id}",
            kind="host",
            server_id=server.id,
        )
        session.add(asset)
        await session.flush()
    return asset


# -- imports --------------------------------------------------------------------------------
def fingerprint(asset_id: int, scanner: str, f: ParsedFinding) -> str:
    """What makes two reports' findings the same finding."""
    return _fingerprints(asset_id, scanner)(f)


def _fingerprints(asset_id: int, scanner: str) -> Callable[[ParsedFinding], str]:
    """`fingerprint` for one asset and scanner, their part of the key joined once."""
    scope = f"{asset_id}\0{scanner}\0"

    def of(f: ParsedFinding) -> str:
        key = scope + "\0".join((f.identifier, f.component, f.version, f.location))
        return hashlib.sha256(key.encode()).hexdigest()

    return of


@dataclass(frozen=True)
class ReportFile:
    filename: str
    sha256: str
    size_bytes: int


async def import_findings(
    session: AsyncSession,
    principal: Principal,
    asset: SecurityAsset,
    scanner: Scanner | ScanSource,
    findings: Iterable[ParsedFinding],
    report: ReportFile,
    now: datetime,
    sla_days: dict[str, int],
) -> SecurityImport:
    """Add what is new, reopen what came back, close what this scanner no longer reports
    for this asset; findings seen again only get their `last_seen`."""
    reported: dict[str, ParsedFinding] = {}
    of = _fingerprints(asset.id, scanner)
    for f in findings:
        reported.setdefault(of(f), f)
    scope = and_(Finding.asset_id == asset.id, Finding.scanner == scanner.value)
    rows = await session.execute(select(Finding.fingerprint, Finding.status).where(scope))
    known: dict[str, str] = {fp: status for fp, status in rows.all()}
    gone = [
        fp for fp, status in known.items() if status != FindingStatus.FIXED and fp not in reported
    ]
    back = [fp for fp, status in known.items() if status == FindingStatus.FIXED and fp in reported]
    # Per-row work is most of an import: what every row shares is read once.
    team_id, asset_id, source, opened = (
        asset.team_id,
        asset.id,
        scanner.value,
        FindingStatus.OPEN.value,
    )
    due = {severity: now + timedelta(days=days) for severity, days in sla_days.items()}
    as_json = _JsonTexts()
    new = [  # in _NEW_COLUMNS' order, as the drivers take them
        (
            team_id,
            asset_id,
            source,
            fp,
            f.identifier,
            f.cwe,
            f.title,
            f.severity,
            f.cvss_vector,
            f.cvss_score,
            f.component,
            f.version,
            f.fixed_version,
            f.location,
            opened,
            now,
            now,
            due[f.severity],
            as_json[f.attack_techniques],
        )
        for fp, f in reported.items()
        if fp not in known
    ]
    # By fingerprint alone (it hashes asset and scanner in): with the scope beside it, a
    # planner without fresh statistics walks the scope's index and compares every row with
    # the whole batch (a minute to close 20,000 findings on PostgreSQL).
    for start in range(0, len(gone), BATCH):
        await session.execute(
            update(Finding)
            .where(Finding.fingerprint.in_(gone[start : start + BATCH]))
            .values(status=FindingStatus.FIXED, fixed_at=now, **_no_acceptance()),
            execution_options={"synchronize_session": False},
        )
    for start in range(0, len(back), BATCH):
        await session.execute(
            update(Finding)
            .where(Finding.fingerprint.in_(back[start : start + BATCH]))
            .values(status=FindingStatus.OPEN, fixed_at=None, overdue_notified_at=None),
            execution_options={"synchronize_session": False},
        )
    # Every finding of the scope that is not fixed now was in this report.
    await session.execute(
        update(Finding).where(scope, Finding.status != FindingStatus.FIXED).values(last_seen=now),
        execution_options={"synchronize_session": False},
    )
    try:
        await _insert(session, new)
    except IntegrityError:
        raise _concurrent() from None
    imp = SecurityImport(
        team_id=asset.team_id,
        asset_id=asset.id,
        scanner=scanner.value,
        filename=report.filename,
        sha256=report.sha256,
        size_bytes=report.size_bytes,
        reported=len(reported),
        new=len(new),
        reopened=len(back),
        closed=len(gone),
        created_by=principal.user_id or None,
        created_at=now,
    )
    session.add(imp)
    await session.flush()
    return imp


#: The columns of a new finding, in the order of the rows `import_findings` builds.
_NEW_COLUMNS = (
    "team_id",
    "asset_id",
    "scanner",
    "fingerprint",
    "identifier",
    "cwe",
    "title",
    "severity",
    "cvss_vector",
    "cvss_score",
    "component",
    "version",
    "fixed_version",
    "location",
    "status",
    "first_seen",
    "last_seen",
    "due_at",
    "attack_techniques",
)


class _JsonTexts(dict[tuple[str, ...], str]):
    """A list's JSON text, encoded once per distinct list (most are empty): the rows go
    to the drivers straight, past SQLAlchemy's JSON type."""

    def __missing__(self, techniques: tuple[str, ...]) -> str:
        text = self[techniques] = json.dumps(list(techniques))
        return text


async def _insert(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        # COPY: several times faster than INSERTs for a report of tens of thousands.
        raw = await conn.get_raw_connection()
        try:
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                Finding.__tablename__, records=rows, columns=_NEW_COLUMNS
            )
        except Exception as err:  # the driver's own error: COPY bypasses SQLAlchemy
            if getattr(err, "sqlstate", None) == UNIQUE_VIOLATION:
                raise _concurrent() from None
            raise
        return
    # One executemany straight to the driver, half the time of a Core insert: the columns
    # whose type converts (the timestamps) convert each distinct value once.
    table = cast(Table, Finding.__table__)
    compiled = table.insert().compile(dialect=conn.dialect, column_keys=list(_NEW_COLUMNS))
    order = [_NEW_COLUMNS.index(c) for c in compiled.positiontup or ()]
    converters: list[tuple[int, Callable[[Any], Any], dict[Any, Any]]] = [
        (i, convert, {})
        for i, c in enumerate(_NEW_COLUMNS)
        if c != "attack_techniques"  # JSON text already
        and (convert := table.c[c].type.bind_processor(conn.dialect))
    ]

    def bound(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i, convert, seen in converters:
            value = values[i]
            if value is not None:
                if value not in seen:
                    seen[value] = convert(value)
                values[i] = seen[value]
        return tuple(values[i] for i in order)

    await conn.exec_driver_sql(compiled.string, [bound(row) for row in rows])


def _concurrent() -> Conflict:
    """Another import of the same asset and scanner wrote the same findings first."""
    return Conflict("Another import for this asset is running; try again")


def _no_acceptance() -> dict[str, Any]:
    return {
        "acceptance_reason": None,
        "acceptance_requested_by": None,
        "acceptance_approved_by": None,
        "acceptance_expires_at": None,
        "accepted_at": None,
    }


def imports_query(principal: Principal) -> Select[Any]:
    return readable(select(SecurityImport), SecurityImport, principal).order_by(
        SecurityImport.id.desc()
    )


def import_out(imp: SecurityImport) -> ImportOut:
    return ImportOut.model_validate(imp, from_attributes=True)


# -- findings -------------------------------------------------------------------------------
@dataclass
class Filters:
    severity: Severity | None = None
    status: FindingStatus | None = None
    asset_id: int | None = None
    team_id: int | None = None
    overdue: bool | None = None
    scanner: Scanner | ScanSource | None = None


def overdue_clause(now: datetime) -> Any:
    return and_(Finding.status == FindingStatus.OPEN, Finding.due_at < now)


def findings_query(principal: Principal, filters: Filters, now: datetime) -> Select[Any]:
    stmt = readable(select(Finding), Finding, principal)
    if filters.severity:
        stmt = stmt.where(Finding.severity == filters.severity)
    if filters.status:
        stmt = stmt.where(Finding.status == filters.status)
    if filters.asset_id:
        stmt = stmt.where(Finding.asset_id == filters.asset_id)
    if filters.team_id:
        stmt = stmt.where(Finding.team_id == filters.team_id)
    if filters.scanner:
        stmt = stmt.where(Finding.scanner == filters.scanner)
    if filters.overdue is not None:
        clause = overdue_clause(now)
        stmt = stmt.where(clause if filters.overdue else ~clause)
    rank = case({s.value: i for i, s in enumerate(Severity)}, value=Finding.severity)
    return stmt.order_by(rank, Finding.due_at, Finding.id)


def sla_state(finding: Finding, now: datetime) -> SlaState:
    if finding.status == FindingStatus.FIXED:
        assert finding.fixed_at is not None
        return SlaState.MET if finding.fixed_at <= finding.due_at else SlaState.MISSED
    if finding.status == FindingStatus.RISK_ACCEPTED:
        return SlaState.PAUSED
    return SlaState.OVERDUE if finding.due_at < now else SlaState.WITHIN


async def finding_outputs(
    session: AsyncSession, rows: Sequence[Finding], now: datetime
) -> list[FindingOut]:
    names = await _asset_names(session, {f.asset_id for f in rows})
    return [
        FindingOut.model_validate(
            {
                **{c: getattr(f, c) for c in FindingOut.model_fields if hasattr(f, c)},
                "asset_name": names.get(f.asset_id, ""),
                "sla_state": sla_state(f, now),
            }
        )
        for f in rows
    ]


async def _asset_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    rows = await session.execute(
        select(SecurityAsset.id, func.coalesce(Server.name, SecurityAsset.name))
        .outerjoin(Server, Server.id == SecurityAsset.server_id)
        .where(SecurityAsset.id.in_(ids))
    )
    return {asset_id: name for asset_id, name in rows.all()}


async def get_finding(session: AsyncSession, principal: Principal, finding_id: int) -> Finding:
    return await get_readable(session, Finding, finding_id, principal, name="Finding")


async def request_acceptance(
    session: AsyncSession,
    principal: Principal,
    finding_id: int,
    reason: str,
    expires_at: datetime,
    now: datetime,
) -> Finding:
    """Ask for the risk to be accepted until `expires_at`; another person approves."""
    finding = await get_finding(session, principal, finding_id)
    if finding.status != FindingStatus.OPEN:
        raise Conflict(
            f"Finding {finding.id} is {finding.status}; only an open finding's risk can be accepted"
        )
    if expires_at.tzinfo is None:
        raise InvalidInput("expires_at needs a time zone (e.g. 2027-01-31T00:00:00Z)")
    if not now < expires_at <= now + MAX_ACCEPTANCE:
        raise InvalidInput("expires_at must be in the future and at most 366 days away")
    finding.acceptance_reason = reason
    finding.acceptance_requested_by = principal.user_id or None
    finding.acceptance_approved_by = None
    finding.acceptance_expires_at = expires_at
    await session.flush()
    return finding


async def approve_acceptance(
    session: AsyncSession, principal: Principal, finding_id: int, now: datetime
) -> Finding:
    finding = await get_finding(session, principal, finding_id)
    if finding.status != FindingStatus.OPEN or finding.acceptance_expires_at is None:
        raise Conflict(f"Finding {finding.id} has no risk acceptance waiting for approval")
    if finding.acceptance_requested_by == principal.user_id:
        raise Forbidden("The person who asked for a risk acceptance cannot approve it")
    if finding.acceptance_expires_at <= now:
        raise Conflict("The requested acceptance has already expired; ask again")
    finding.status = FindingStatus.RISK_ACCEPTED
    finding.acceptance_approved_by = principal.user_id or None
    finding.accepted_at = now
    await session.flush()
    return finding


# -- the clock: expiry and overdue ---------------------------------------------------------
@dataclass
class Tick:
    expired: dict[int, list[int]]  # team -> finding ids whose acceptance ended
    overdue: dict[int, list[int]]  # team -> finding ids that just became overdue


async def tick(session: AsyncSession, now: datetime) -> Tick:
    """Acceptances that ended reopen their findings, the SLA clock moved on by the time it
    stood still; open findings past their due date are marked once, to raise one event."""
    result = Tick(defaultdict(list), defaultdict(list))
    ended = await session.scalars(
        select(Finding).where(
            Finding.status == FindingStatus.RISK_ACCEPTED, Finding.acceptance_expires_at <= now
        )
    )
    for finding in ended:
        assert finding.accepted_at is not None and finding.acceptance_expires_at is not None
        finding.due_at += finding.acceptance_expires_at - finding.accepted_at
        finding.status = FindingStatus.OPEN
        finding.overdue_notified_at = None  # a new due date: overdue is news again
        for field, value in _no_acceptance().items():
            setattr(finding, field, value)
        result.expired[finding.team_id].append(finding.id)
    await session.flush()
    late = await session.execute(
        select(Finding.id, Finding.team_id).where(
            overdue_clause(now), Finding.overdue_notified_at.is_(None)
        )
    )
    for finding_id, team_id in late.all():
        result.overdue[team_id].append(finding_id)
    for ids in result.overdue.values():
        for start in range(0, len(ids), BATCH):
            await session.execute(
                update(Finding)
                .where(Finding.id.in_(ids[start : start + BATCH]))
                .values(overdue_notified_at=now),
                execution_options={"synchronize_session": False},
            )
    return result


# -- metrics --------------------------------------------------------------------------------
def _week_start(now: datetime) -> datetime:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


async def metrics(
    session: AsyncSession, principal: Principal, now: datetime, team_id: int | None = None
) -> MetricsOut:
    def scoped(*columns: Any) -> Select[Any]:
        stmt = readable(_rows(*columns), Finding, principal)
        return stmt.where(Finding.team_id == team_id) if team_id else stmt

    open_rows = await session.execute(
        scoped(Finding.severity, func.count())
        .where(Finding.status == FindingStatus.OPEN)
        .group_by(Finding.severity)
    )
    by_severity: dict[str, int] = {severity: count for severity, count in open_rows.all()}
    counts = (
        await session.execute(
            scoped(
                func.count().filter(overdue_clause(now)),
                func.count().filter(Finding.status == FindingStatus.RISK_ACCEPTED),
            )
        )
    ).one()
    start = _week_start(now) - timedelta(weeks=TREND_WEEKS - 1)
    fixed = (
        await session.execute(
            scoped(Finding.first_seen, Finding.fixed_at, Finding.due_at).where(
                Finding.status == FindingStatus.FIXED, Finding.fixed_at >= start
            )
        )
    ).all()
    days = [(f.fixed_at - f.first_seen).total_seconds() / 86400 for f in fixed]
    weeks = []
    for i in range(TREND_WEEKS):
        begin = start + timedelta(weeks=i)
        end = begin + timedelta(weeks=1)
        opened, closed, still_open = (
            await session.execute(
                scoped(
                    func.count().filter(Finding.first_seen >= begin, Finding.first_seen < end),
                    func.count().filter(Finding.fixed_at >= begin, Finding.fixed_at < end),
                    func.count().filter(
                        Finding.first_seen < end,
                        or_(Finding.fixed_at.is_(None), Finding.fixed_at >= end),
                    ),
                )
            )
        ).one()
        weeks.append(
            WeekPoint(week_start=begin, opened=opened, fixed=closed, open_at_end=still_open)
        )
    return MetricsOut(
        open_total=sum(by_severity.values()),
        open_by_severity=[SeverityCount(severity=s, count=by_severity.get(s, 0)) for s in Severity],
        overdue=counts[0],
        risk_accepted=counts[1],
        mean_time_to_remediate_days=round(sum(days) / len(days), 2) if days else None,
        sla_compliance_percent=round(
            100 * sum(1 for f in fixed if f.fixed_at <= f.due_at) / len(fixed), 1
        )
        if fixed
        else None,
        weeks=weeks,
    )

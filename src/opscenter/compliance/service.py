"""Compliance: the framework catalogue, evidence the platform gathers from its own rows
(backups, verifications, the audit chain, accounts and keys, incidents) and evidence people
upload, assessments of a framework over a period, and their stored snapshots.

Status rules (also in the knowledge base's `how-compliance-works`):
- A platform check judges items (targets, accounts, keys, incidents): all pass `met`, some
  `partial`, none `not_met`; nothing to judge `no_evidence`.
- Uploaded evidence counts where its effective period overlaps the assessed one: covering
  the whole period `met`, part of it `partial`.
- A control's status is its platform check's when that found anything to judge (facts win
  over documents), else its uploads', else `no_evidence`.
- A requirement combines its controls: all `met` is `met`; all `no_evidence` is
  `no_evidence`; all judged ones `not_met` is `not_met`; any other mix is `partial`; a
  requirement no control is mapped to is `not_assessed`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, cast

from sqlalchemy import Select, String, false, func, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.audit import service as audit
from opscenter.compliance import catalogue
from opscenter.compliance.catalogue import Control, Framework
from opscenter.compliance.schemas import (
    ControlAssessment,
    ControlOut,
    EvidenceIn,
    EvidenceItem,
    EvidenceOut,
    FrameworkAssessment,
    FrameworkOut,
    FrameworkRef,
    ReportDetail,
    ReportOut,
    RequirementAssessment,
    RequirementOut,
    Status,
)
from opscenter.core import cron
from opscenter.core.clock import isoformat_z, utcnow
from opscenter.core.errors import Forbidden, InvalidInput, NotFound
from opscenter.core.principal import ALL_TEAMS, Principal
from opscenter.core.scoping import check_team_access, readable
from opscenter.models import (
    ApiKey,
    Backup,
    BackupStatus,
    ComplianceEvidence,
    ComplianceReport,
    Incident,
    Schedule,
    Server,
    SsoIdentity,
    User,
    VerificationRun,
    team_members,
)

#: A target misses its RPO when its newest good backup gets older than this many intervals.
RPO_INTERVALS = 1.5
#: An account or key unused this long at the end of the period should have been removed.
STALE_AFTER = timedelta(days=90)
#: Incident response targets per severity: (acknowledge within, resolve within).
INCIDENT_TARGETS: dict[str, tuple[timedelta, timedelta]] = {
    "critical": (timedelta(minutes=15), timedelta(hours=4)),
    "high": (timedelta(hours=1), timedelta(hours=24)),
    "medium": (timedelta(hours=4), timedelta(days=3)),
    "low": (timedelta(hours=24), timedelta(days=7)),
}
#: Names listed in one evidence line before "and N more".
NAMES_SHOWN = 20
#: The longest period one assessment covers.
MAX_PERIOD = timedelta(days=3 * 366)
FAILED_VERIFICATIONS = ("failed", "corrupt")
#: Rows of completed backups fetched per round trip.
PARTITION = 10_000


# -- the catalogue --------------------------------------------------------------------------
def get_framework(framework_id: str) -> Framework:
    found = catalogue.frameworks().get(framework_id)
    if found is None:
        raise NotFound("Framework", framework_id)
    return found


def _control_out(control: Control) -> ControlOut:
    return ControlOut(
        id=control.id,
        title=control.title,
        satisfied_by=control.satisfied_by,
        gathered_by_platform=control.check is not None,
        requirements={fw: list(ids) for fw, ids in control.maps.items()},
    )


def framework_out(framework: Framework) -> FrameworkOut:
    mapped = catalogue.controls_of(framework.id)
    return FrameworkOut(
        id=framework.id,
        name=framework.name,
        version=framework.version,
        publisher=framework.publisher,
        requirement_count=len(framework.requirements),
        requirements=[
            RequirementOut(
                id=r.id,
                title=r.title,
                group=r.group,
                group_title=framework.groups[r.group],
                controls=[c.id for c in mapped.get(r.id, ())],
            )
            for r in framework.requirements
        ],
        controls=[
            _control_out(c) for c in catalogue.controls().values() if c.maps.get(framework.id)
        ],
    )


def controls_out() -> list[ControlOut]:
    return [_control_out(c) for c in catalogue.controls().values()]


# -- uploaded evidence ----------------------------------------------------------------------
def _visible(stmt: Select[Any], principal: Principal) -> Select[Any]:
    """Evidence of the caller's teams and the installation-wide evidence (no team)."""
    if principal.sees_all_teams:
        return stmt
    return stmt.where(
        or_(
            ComplianceEvidence.team_id.is_(None),
            ComplianceEvidence.team_id.in_(principal.team_ids),
        )
    )


def evidence_query(principal: Principal, control_id: str | None = None) -> Select[Any]:
    stmt = _visible(select(ComplianceEvidence), principal)
    if control_id is not None:
        # JSON containment differs per backend; ids are quoted, so the text match is exact.
        ids = sql_cast(ComplianceEvidence.control_ids, String)
        stmt = stmt.where(ids.contains(f'"{control_id}"', autoescape=True))
    return stmt.order_by(ComplianceEvidence.id.desc())


def evidence_out(row: ComplianceEvidence) -> EvidenceOut:
    return EvidenceOut.model_validate(row)


def _team_for(principal: Principal, team_id: int | None) -> int | None:
    """The team a new row is for: the one given (if the caller is in it), the caller's only
    team, or none (the whole installation) for someone who sees every team."""
    if team_id is not None:
        check_team_access(principal, team_id)
        return team_id
    if principal.sees_all_teams:
        return None
    if len(principal.team_ids) == 1:
        return next(iter(principal.team_ids))
    raise InvalidInput(
        "You belong to no team: give team_id"
        if not principal.team_ids
        else "You belong to several teams: give team_id"
    )


async def add_evidence(
    session: AsyncSession, principal: Principal, data: EvidenceIn
) -> ComplianceEvidence:
    known = catalogue.controls()
    unknown = sorted({c for c in data.control_ids if c not in known})
    if unknown:
        raise InvalidInput(f"Unknown control ids: {', '.join(unknown)} (see /audit/controls)")
    row = ComplianceEvidence(
        team_id=_team_for(principal, data.team_id),
        title=data.title,
        description=data.description,
        link=data.link,
        control_ids=sorted(set(data.control_ids)),
        effective_from=data.effective_from,
        effective_to=data.effective_to,
        uploaded_by_id=principal.user_id or None,
        uploaded_by=principal.username,
    )
    session.add(row)
    await session.flush()
    return row


async def get_evidence(
    session: AsyncSession, principal: Principal, evidence_id: int
) -> ComplianceEvidence:
    stmt = _visible(select(ComplianceEvidence), principal)
    row = (await session.scalars(stmt.where(ComplianceEvidence.id == evidence_id))).first()
    if row is None:
        raise NotFound("Evidence", evidence_id)
    return cast(ComplianceEvidence, row)


async def delete_evidence(
    session: AsyncSession, principal: Principal, evidence_id: int
) -> ComplianceEvidence:
    row = await get_evidence(session, principal, evidence_id)
    if row.team_id is None and not principal.sees_all_teams:
        raise Forbidden(
            "Evidence for the whole installation is removed by someone who sees every team"
        )
    await session.delete(row)
    await session.flush()
    return row


# -- gathering ------------------------------------------------------------------------------
@dataclasses.dataclass
class Period:
    start: datetime
    end: datetime
    #: Where facts stop: the period's end, or now for a period that has not ended.
    until: datetime


def _judge(passed: int, judged: int) -> Status:
    if judged == 0:
        return Status.NO_EVIDENCE
    if passed == judged:
        return Status.MET
    return Status.PARTIAL if passed else Status.NOT_MET


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def _rows(*columns: Any) -> Select[Any]:
    return cast("Select[Any]", select(*columns))


Target = tuple[int | None, str]
Found = tuple[Status, list[EvidenceItem]]


async def verify_chain(session: AsyncSession) -> audit.ChainReport:
    """The audit chain's entries after its latest checkpoint: what an assessment claims."""
    return await audit.verify_chain(session, await audit.latest_checkpoint(session))


class Gatherer:
    """The platform's facts for one principal and period, each read once however many
    controls use them: a bounded number of aggregate queries, none per target."""

    def __init__(
        self,
        session: AsyncSession,
        principal: Principal,
        period: Period,
        chain: audit.ChainReport | None = None,
    ) -> None:
        self.session = session
        self.principal = principal
        self.period = period
        self.chain = chain
        self._cache: dict[str, Any] = {}

    async def _once(self, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        if key not in self._cache:
            self._cache[key] = await load()
        return self._cache[key]

    def _item(self, kind: str, title: str, detail: str) -> EvidenceItem:
        return EvidenceItem(
            kind=kind,
            source="platform",
            title=title,
            effective_from=self.period.start,
            effective_to=self.period.until,
            detail=detail,
        )

    # -- backups ------------------------------------------------------------------------
    async def _server_names(self) -> dict[int, str]:
        async def load() -> dict[int, str]:
            stmt = readable(_rows(Server.id, Server.name), Server, self.principal)
            return {sid: name for sid, name in (await self.session.execute(stmt)).all()}

        return cast(dict[int, str], await self._once("servers", load))

    def _target_name(self, target: Target, names: dict[int, str]) -> str:
        server_id, database = target
        server = names.get(server_id, "(deleted server)") if server_id else "(no server)"
        return f"{server} / {database}"

    async def _completed(self) -> dict[Target, list[tuple[datetime, bool]]]:
        """Each target's completed backups in the period (time, encrypted), oldest first:
        one streamed query of two narrow columns per backup."""

        async def load() -> dict[Target, list[tuple[datetime, bool]]]:
            stmt = readable(
                _rows(
                    Backup.server_id, Backup.database_name, Backup.completed_at, Backup.is_encrypted
                ),
                Backup,
                self.principal,
            ).where(
                Backup.status == BackupStatus.COMPLETED,
                Backup.copy_of_id.is_(None),  # a copy is the same dump in another storage
                Backup.completed_at >= self.period.start,
                Backup.completed_at <= self.period.until,
            )
            found: dict[Target, list[tuple[datetime, bool]]] = {}
            # Fetched in large partitions: a row at a time would cross to the driver's
            # thread (aiosqlite) or the network once per backup.
            ordered = stmt.order_by(Backup.completed_at).execution_options(yield_per=PARTITION)
            result = await self.session.stream(ordered)
            async for partition in result.partitions():
                for server_id, database, at, encrypted in partition:
                    found.setdefault((server_id, database), []).append((at, encrypted))
            return found

        return cast(dict[Target, list[tuple[datetime, bool]]], await self._once("completed", load))

    async def _grouped(self, stmt: Select[Any], key: str) -> dict[Target, Any]:
        async def load() -> dict[Target, Any]:
            return {(s, d): v for s, d, v in (await self.session.execute(stmt)).all()}

        return cast(dict[Target, Any], await self._once(key, load))

    async def _failed(self) -> dict[Target, int]:
        stmt = (
            readable(
                _rows(Backup.server_id, Backup.database_name, func.count()), Backup, self.principal
            )
            .where(
                Backup.status == BackupStatus.FAILED,
                Backup.created_at >= self.period.start,
                Backup.created_at <= self.period.until,
            )
            .group_by(Backup.server_id, Backup.database_name)
        )
        return await self._grouped(stmt, "failed")

    async def _before(self) -> dict[Target, datetime]:
        """Each target's newest good backup before the period: where its age starts."""
        stmt = (
            readable(
                _rows(Backup.server_id, Backup.database_name, func.max(Backup.completed_at)),
                Backup,
                self.principal,
            )
            .where(
                Backup.status == BackupStatus.COMPLETED,
                Backup.copy_of_id.is_(None),
                Backup.completed_at < self.period.start,
            )
            .group_by(Backup.server_id, Backup.database_name)
        )
        return await self._grouped(stmt, "before")

    async def _schedules(self) -> list[Schedule]:
        async def load() -> list[Schedule]:
            stmt = readable(select(Schedule), Schedule, self.principal).where(
                Schedule.enabled.is_(True), Schedule.created_at <= self.period.until
            )
            return list((await self.session.scalars(stmt.order_by(Schedule.id))).all())

        return cast(list[Schedule], await self._once("schedules", load))

    def _rpo(self, schedule: Schedule, after: datetime) -> timedelta | None:
        tz = cron.zone(schedule.timezone)
        first = cron.next_after(schedule.cron_expression, tz, after)
        second = first and cron.next_after(schedule.cron_expression, tz, first)
        return (second - first) * RPO_INTERVALS if first and second else None

    async def backups(self) -> Found:
        completed, failed = await self._completed(), await self._failed()
        before, names = await self._before(), await self._server_names()
        scheduled: dict[Target, Schedule] = {}
        for schedule in await self._schedules():
            target: Target = (
                schedule.server_id,
                schedule.database_name or schedule.source_path or "",
            )
            scheduled.setdefault(target, schedule)
        targets = sorted(
            set(scheduled) | set(completed) | set(failed), key=lambda t: (t[0] or 0, t[1])
        )
        items: list[EvidenceItem] = []
        passed = 0
        for target in targets:
            times = [at for at, _ in completed.get(target, [])]
            ok, detail = self._backups_of(target, times, failed.get(target, 0), before, scheduled)
            passed += ok
            items.append(self._item("backups", self._target_name(target, names), detail))
        return _judge(passed, len(targets)), items

    def _backups_of(
        self,
        target: Target,
        times: list[datetime],
        failures: int,
        before: dict[Target, datetime],
        scheduled: dict[Target, Schedule],
    ) -> tuple[bool, str]:
        counts = f"{len(times)} completed, {failures} failed"
        if not times:
            return False, f"{counts}: no good backup in the period"
        schedule = scheduled.get(target)
        if schedule is None:
            return True, f"{counts}; not scheduled, so no RPO to meet"
        window_start = max(self.period.start, schedule.created_at)
        rpo = self._rpo(schedule, window_start)
        if rpo is None:
            return True, f"{counts}; the schedule never fires again, so no RPO to meet"
        # The age of the newest good backup at every moment from the schedule's start (or
        # the period's): a gap between good backups, or since the last, longer than the RPO
        # misses it. Without an earlier backup the age counts from the window's start.
        earlier = [t for t in [before.get(target), *times] if t is not None and t < window_start]
        previous = max(earlier, default=window_start)
        edges = [max(previous, window_start - rpo)]
        edges += [t for t in times if t >= window_start] + [self.period.until]
        worst = max(b - a for a, b in pairwise(edges))
        verdict = "met" if worst <= rpo else "missed"
        return worst <= rpo, f"{counts}; largest gap {_hours(worst)}, RPO {_hours(rpo)}: {verdict}"

    async def _verifications(self) -> dict[tuple[int | None, str, str, str], int]:
        """Finished verification runs in the period per target, test type and outcome."""

        async def load() -> dict[tuple[int | None, str, str, str], int]:
            stmt = (
                readable(
                    _rows(
                        Backup.server_id,
                        Backup.database_name,
                        VerificationRun.test_type,
                        VerificationRun.status,
                        func.count(),
                    ).join(Backup, Backup.id == VerificationRun.backup_id),
                    VerificationRun,
                    self.principal,
                )
                .where(
                    VerificationRun.status.in_(("passed", *FAILED_VERIFICATIONS)),
                    VerificationRun.finished_at >= self.period.start,
                    VerificationRun.finished_at <= self.period.until,
                )
                .group_by(
                    Backup.server_id,
                    Backup.database_name,
                    VerificationRun.test_type,
                    VerificationRun.status,
                )
            )
            rows = (await self.session.execute(stmt)).all()
            return {(s, d, t, st): n for s, d, t, st, n in rows}

        return cast(
            dict[tuple[int | None, str, str, str], int], await self._once("verifications", load)
        )

    async def _verified(self, kind: str, test_types: frozenset[str] | None) -> Found:
        completed, names = await self._completed(), await self._server_names()
        counts: dict[Target, dict[str, int]] = {}
        for (s, d, test_type, status), n in (await self._verifications()).items():
            if test_types is None or test_type in test_types:
                per = counts.setdefault((s, d), {"passed": 0, "failed": 0})
                per["passed" if status == "passed" else "failed"] += n
        items: list[EvidenceItem] = []
        passed = 0
        for target in sorted(completed, key=lambda t: (t[0] or 0, t[1])):
            per = counts.get(target, {"passed": 0, "failed": 0})
            passed += per["passed"] > 0
            detail = f"{per['passed']} passed, {per['failed']} failed in the period"
            items.append(self._item(kind, self._target_name(target, names), detail))
        return _judge(passed, len(completed)), items

    async def backup_verification(self) -> Found:
        return await self._verified("verifications", None)

    async def restore_tests(self) -> Found:
        return await self._verified("restore_tests", frozenset({"restore"}))

    async def backup_encryption(self) -> Found:
        completed, names = await self._completed(), await self._server_names()
        items: list[EvidenceItem] = []
        encrypted = total = 0
        for target in sorted(completed, key=lambda t: (t[0] or 0, t[1])):
            flags = [e for _, e in completed[target]]
            encrypted += sum(flags)
            total += len(flags)
            detail = f"{sum(flags)} of {len(flags)} completed backups encrypted"
            items.append(self._item("backups", self._target_name(target, names), detail))
        return _judge(encrypted, total), items

    # -- the audit trail ----------------------------------------------------------------
    async def audit_trail(self) -> Found:
        """The chain after the latest checkpoint (or as the caller just verified it)."""
        report = self.chain or await verify_chain(self.session)
        now = isoformat_z(utcnow())
        if report.valid and report.after_at is None:
            detail = f"verified at {now}: every entry's hash and link hold, from the first"
        elif report.valid:
            assert report.after_at is not None
            detail = (
                f"verified at {now}: the {report.checked} entries since the checkpoint of "
                f"{isoformat_z(report.after_at)} hold their hashes and links, and the last "
                "entry that checkpoint verified still carries the hash it recorded; the "
                "entries up to it were verified by that checkpoint and those before it, not "
                "again now: only a full verification (GET /audit/verify) would show an edit "
                "made to them since"
            )
        else:
            where = f" at entry {report.first_bad_id}" if self.principal.sees_all_teams else ""
            detail = f"broken{where}: {report.problem}"
        item = self._item("audit_chain", "Audit trail hash chain", detail)
        return (Status.MET if report.valid else Status.NOT_MET), [item]

    # -- accounts and keys --------------------------------------------------------------
    def _user_scope(self, stmt: Select[Any], user_id: Any) -> Select[Any]:
        """Accounts of the caller's teams (every account for someone who sees every team)."""
        if self.principal.sees_all_teams:
            return stmt
        members = select(team_members.c.user_id).where(
            team_members.c.team_id.in_(self.principal.team_ids)
        )
        return stmt.where(user_id.in_(members)) if self.principal.team_ids else stmt.where(false())

    async def _users(self) -> list[tuple[int, str, datetime | None, datetime, bool]]:
        """Active accounts that existed at the end: id, name, last sign-in, created, SSO."""

        async def load() -> list[tuple[int, str, datetime | None, datetime, bool]]:
            linked = select(SsoIdentity.user_id)
            stmt = self._user_scope(
                _rows(
                    User.id,
                    User.username,
                    User.last_login,
                    User.created_at,
                    User.id.in_(linked),
                ).where(User.is_active.is_(True), User.created_at <= self.period.until),
                User.id,
            )
            rows = (await self.session.execute(stmt.order_by(User.id))).all()
            return [(i, n, last, made, bool(sso)) for i, n, last, made, sso in rows]

        return cast(
            list[tuple[int, str, datetime | None, datetime, bool]], await self._once("users", load)
        )

    async def _keys(self) -> list[tuple[str, str, datetime | None, datetime | None, datetime]]:
        """Keys active at the end: name, owner, expiry, last use, created."""

        async def load() -> list[tuple[str, str, datetime | None, datetime | None, datetime]]:
            until = self.period.until
            stmt = self._user_scope(
                _rows(
                    ApiKey.name,
                    User.username,
                    ApiKey.expires_at,
                    ApiKey.last_used_at,
                    ApiKey.created_at,
                )
                .join(User, User.id == ApiKey.user_id)
                .where(
                    ApiKey.created_at <= until,
                    or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > until),
                    or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > until),
                ),
                ApiKey.user_id,
            )
            rows = (await self.session.execute(stmt.order_by(ApiKey.id))).all()
            return [(n, owner, exp, used, made) for n, owner, exp, used, made in rows]

        return cast(
            list[tuple[str, str, datetime | None, datetime | None, datetime]],
            await self._once("keys", load),
        )

    async def access_review(self) -> Found:
        cutoff = self.period.until - STALE_AFTER
        users, keys = await self._users(), await self._keys()
        stale_users = [name for _, name, last, made, _ in users if (last or made) < cutoff]
        stale_keys = [
            f"{k} ({owner})" for k, owner, _, used, made in keys if (used or made) < cutoff
        ]
        items = [
            self._item(
                "access_review",
                "User accounts",
                f"{len(users)} active, {len(stale_users)} unused for 90 days"
                + (f": {_names(stale_users)}" if stale_users else ""),
            ),
            self._item(
                "access_review",
                "API keys",
                f"{len(keys)} active, {len(stale_keys)} unused for 90 days"
                + (f": {_names(stale_keys)}" if stale_keys else ""),
            ),
        ]
        judged = len(users) + len(keys)
        return _judge(judged - len(stale_users) - len(stale_keys), judged), items

    async def api_key_expiry(self) -> Found:
        keys = await self._keys()
        endless = [f"{k} ({owner})" for k, owner, expires, _, _ in keys if expires is None]
        detail = f"{len(keys) - len(endless)} of {len(keys)} active keys expire" + (
            f"; without expiry: {_names(endless)}" if endless else ""
        )
        return _judge(len(keys) - len(endless), len(keys)), [
            self._item("api_keys", "API key expiry", detail)
        ]

    async def sso(self) -> Found:
        users = await self._users()
        local = [name for _, name, _, _, linked in users if not linked]
        detail = f"{len(users) - len(local)} of {len(users)} active accounts sign in by SSO" + (
            f"; local only: {_names(local)}" if local else ""
        )
        return _judge(len(users) - len(local), len(users)), [
            self._item("sso", "Single sign-on", detail)
        ]

    # -- incidents ----------------------------------------------------------------------
    async def incidents(self) -> Found:
        stmt = readable(
            _rows(
                Incident.id,
                Incident.severity,
                Incident.created_at,
                Incident.acknowledged_at,
                Incident.resolved_at,
            ),
            Incident,
            self.principal,
        ).where(Incident.created_at >= self.period.start, Incident.created_at <= self.period.until)
        rows = (await self.session.execute(stmt.order_by(Incident.id))).all()
        now = utcnow()
        late: list[str] = []
        judged = 0
        acks: list[float] = []
        fixes: list[float] = []
        for ident, severity, opened, acked, resolved in rows:
            ack_target, fix_target = INCIDENT_TARGETS.get(severity, INCIDENT_TARGETS["low"])
            if acked:
                acks.append((acked - opened).total_seconds())
            if resolved:
                fixes.append((resolved - opened).total_seconds())
            problems = [
                f"{what} {_hours((when or now) - opened)} > {_hours(target)}"
                for what, when, target in (
                    ("acknowledged after", acked, ack_target),
                    ("resolved after", resolved, fix_target),
                )
                if (when or now) - opened > target
            ]
            if resolved is None and not problems:
                continue  # still open and within its targets: not yet judged
            judged += 1
            if problems:
                late.append(f"INC-{ident} ({severity}: {', '.join(problems)})")
        mtta = f"{sum(acks) / len(acks) / 60:.1f} min" if acks else "n/a"
        mttr = f"{sum(fixes) / len(fixes) / 3600:.1f} h" if fixes else "n/a"
        detail = (
            f"{len(rows)} opened, {judged} judged, {len(late)} outside their targets; "
            f"MTTA {mtta}, MTTR {mttr}" + (f"; late: {_names(late)}" if late else "")
        )
        return _judge(judged - len(late), judged), [
            self._item("incidents", "Incident response times", detail)
        ]

    # -- uploads --------------------------------------------------------------------------
    async def uploads(self) -> dict[str, list[ComplianceEvidence]]:
        """Uploaded evidence effective at some point of the period, per control."""

        async def load() -> dict[str, list[ComplianceEvidence]]:
            stmt = _visible(select(ComplianceEvidence), self.principal).where(
                ComplianceEvidence.effective_from <= self.period.end,
                ComplianceEvidence.effective_to >= self.period.start,
            )
            found: dict[str, list[ComplianceEvidence]] = {}
            for row in (await self.session.scalars(stmt.order_by(ComplianceEvidence.id))).all():
                for control_id in row.control_ids:
                    found.setdefault(control_id, []).append(row)
            return found

        return cast(dict[str, list[ComplianceEvidence]], await self._once("uploads", load))


CHECKS: dict[str, Callable[[Gatherer], Awaitable[Found]]] = {
    "backups": Gatherer.backups,
    "backup_verification": Gatherer.backup_verification,
    "restore_tests": Gatherer.restore_tests,
    "backup_encryption": Gatherer.backup_encryption,
    "audit_trail": Gatherer.audit_trail,
    "access_review": Gatherer.access_review,
    "api_key_expiry": Gatherer.api_key_expiry,
    "sso": Gatherer.sso,
    "incidents": Gatherer.incidents,
}


def covers(rows: Iterable[ComplianceEvidence], start: datetime, end: datetime) -> bool:
    """Whether the effective periods together cover [start, end] without a hole."""
    reached = start
    for row in sorted(rows, key=lambda r: r.effective_from):
        if row.effective_from > reached:
            return False
        reached = max(reached, row.effective_to)
        if reached >= end:
            return True
    return reached >= end


def _upload_item(row: ComplianceEvidence) -> EvidenceItem:
    by = f"uploaded by {row.uploaded_by} at {isoformat_z(row.created_at)}"
    return EvidenceItem(
        kind="document",
        source="upload",
        title=row.title,
        effective_from=row.effective_from,
        effective_to=row.effective_to,
        detail=f"{row.description}\n({by})" if row.description else by,
        link=row.link,
    )


async def _assess_control(gatherer: Gatherer, control: Control) -> ControlAssessment:
    status: Status = Status.NO_EVIDENCE
    items: list[EvidenceItem] = []
    if control.check is not None:
        status, items = await CHECKS[control.check](gatherer)
    uploaded = (await gatherer.uploads()).get(control.id, [])
    if status is Status.NO_EVIDENCE and uploaded:
        period = gatherer.period
        status = Status.MET if covers(uploaded, period.start, period.end) else Status.PARTIAL
    items = [*items, *(_upload_item(r) for r in uploaded)]
    return ControlAssessment(id=control.id, title=control.title, status=status, evidence=items)


def combine(statuses: Sequence[Status]) -> Status:
    """A requirement's status from its controls' (see the module's rules)."""
    if not statuses:
        return Status.NOT_ASSESSED
    judged = [s for s in statuses if s is not Status.NO_EVIDENCE]
    if not judged:
        return Status.NO_EVIDENCE
    if len(judged) == len(statuses) and all(s is Status.MET for s in judged):
        return Status.MET
    if all(s is Status.NOT_MET for s in judged):
        return Status.NOT_MET
    return Status.PARTIAL


def check_period(start: datetime, end: datetime, now: datetime) -> None:
    if end <= start:
        raise InvalidInput("The period's end must be after its start")
    if start >= now:
        raise InvalidInput("The period must start in the past")
    if end - start > MAX_PERIOD:
        raise InvalidInput("A period covers at most three years")


async def assess_framework(
    session: AsyncSession,
    principal: Principal,
    framework: str,
    start: datetime,
    end: datetime,
    chain: audit.ChainReport | None = None,
) -> FrameworkAssessment:
    """Each requirement of `framework` over [start, end], as `principal`'s teams stand;
    with the audit chain as `chain` says when given (`verify_chain`'s report)."""
    [assessment] = await assess_frameworks(session, principal, [framework], start, end, chain)
    return assessment


async def assess_frameworks(
    session: AsyncSession,
    principal: Principal,
    framework_ids: Sequence[str],
    start: datetime,
    end: datetime,
    chain: audit.ChainReport | None = None,
) -> list[FrameworkAssessment]:
    """Several frameworks over one period, each control assessed once for all of them."""
    found = [get_framework(f) for f in framework_ids]
    now = utcnow()
    check_period(start, end, now)
    gatherer = Gatherer(session, principal, Period(start, end, min(end, now)), chain)
    assessed: dict[str, ControlAssessment] = {}
    results = []
    for framework in found:
        mapped = catalogue.controls_of(framework.id)
        for controls in mapped.values():
            for control in controls:
                if control.id not in assessed:
                    assessed[control.id] = await _assess_control(gatherer, control)
        requirements = []
        for requirement in framework.requirements:
            judged = [assessed[c.id] for c in mapped.get(requirement.id, ())]
            requirements.append(
                RequirementAssessment(
                    id=requirement.id,
                    title=requirement.title,
                    group=requirement.group,
                    status=combine([c.status for c in judged]),
                    controls=judged,
                )
            )
        summary = {s: 0 for s in Status}
        for r in requirements:
            summary[r.status] += 1
        results.append(
            FrameworkAssessment(
                framework=FrameworkRef(
                    id=framework.id, name=framework.name, version=framework.version
                ),
                period_start=start,
                period_end=end,
                generated_at=now,
                summary=summary,
                requirements=requirements,
            )
        )
    return results


# -- reports --------------------------------------------------------------------------------
def narrowed(principal: Principal, team_id: int | None) -> tuple[Principal, int | None]:
    """The principal an assessment runs as, and the team its report belongs to: one team
    (given, or the caller's only one), or every team for someone who sees them all."""
    team = _team_for(principal, team_id)
    if team is None:
        return principal, None
    return (
        dataclasses.replace(
            principal,
            team_ids=frozenset({team}),
            permissions=principal.permissions - {ALL_TEAMS},
            is_system=False,
        ),
        team,
    )


def report_scope(
    principal: Principal, framework: str, team_id: int | None
) -> tuple[Principal, int | None]:
    """Check a report request: the principal its assessment runs as and its team."""
    if framework not in catalogue.frameworks():
        known = ", ".join(catalogue.frameworks())
        raise InvalidInput(f"Unknown framework {framework!r}; one of: {known}")
    return narrowed(principal, team_id)


def store_report(
    session: AsyncSession,
    principal: Principal,
    assessment: FrameworkAssessment,
    team_id: int | None,
) -> ComplianceReport:
    row = ComplianceReport(
        team_id=team_id,
        framework=assessment.framework.id,
        period_start=assessment.period_start,
        period_end=assessment.period_end,
        generated_at=assessment.generated_at,
        generated_by_id=principal.user_id or None,
        generated_by=principal.username,
        summary={str(k): v for k, v in assessment.summary.items()},
        snapshot=assessment.model_dump(mode="json"),
    )
    session.add(row)
    return row


def reports_query(principal: Principal, framework: str | None = None) -> Select[Any]:
    stmt = readable(select(ComplianceReport), ComplianceReport, principal)
    if framework is not None:
        stmt = stmt.where(ComplianceReport.framework == framework)
    return stmt.order_by(ComplianceReport.id.desc())


async def get_report(
    session: AsyncSession, principal: Principal, report_id: int
) -> ComplianceReport:
    stmt = reports_query(principal).where(ComplianceReport.id == report_id)
    row = (await session.scalars(stmt)).first()
    if row is None:
        raise NotFound("Report", report_id)
    return cast(ComplianceReport, row)


def report_out(row: ComplianceReport) -> ReportOut:
    return ReportOut.model_validate(row)


def report_detail(row: ComplianceReport) -> ReportDetail:
    return ReportDetail(
        **report_out(row).model_dump(),
        assessment=FrameworkAssessment.model_validate(row.snapshot),
    )


CSV_COLUMNS = [
    "requirement_id",
    "requirement_title",
    "requirement_status",
    "control_id",
    "control_title",
    "control_status",
    "evidence_kind",
    "evidence_source",
    "evidence_title",
    "effective_from",
    "effective_to",
    "detail",
    "link",
]


def report_csv(assessment: FrameworkAssessment) -> str:
    """A row per requirement, control and evidence item (the requirement alone where it
    has no control, the control alone where it has no evidence)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for r in assessment.requirements:
        head = [r.id, r.title, r.status.value]
        if not r.controls:
            writer.writerow([*head, *[""] * 10])
        for c in r.controls:
            control = [c.id, c.title, c.status.value]
            if not c.evidence:
                writer.writerow([*head, *control, *[""] * 7])
            for e in c.evidence:
                writer.writerow(
                    [
                        *head,
                        *control,
                        e.kind,
                        e.source,
                        e.title,
                        isoformat_z(e.effective_from),
                        isoformat_z(e.effective_to),
                        e.detail,
                        e.link or "",
                    ]
                )
    return buf.getvalue()

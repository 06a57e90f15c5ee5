"""Fuzzing campaigns: a run's output read into its figures and its crashes, the crashes
deduplicated by stack hash, and each distinct crash (optionally) a finding of the asset
the target belongs to. A crash that an earlier run already made a finding of is that
finding again (seen again, reopened if it was fixed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.errors import Conflict, InvalidInput
from opscenter.core.principal import Principal
from opscenter.core.scoping import readable
from opscenter.models.fuzzing import FuzzEngine, FuzzingCampaign, FuzzingCrash
from opscenter.models.security import Finding, FindingStatus, SecurityAsset
from opscenter.security import service
from opscenter.security.fuzzing_parse import Crash, OutputProblem, Stats, afl_stats, libfuzzer
from opscenter.security.importers import ParsedFinding
from opscenter.security.importers.formats import Scanner
from opscenter.security.threat_schemas import CrashOut, FuzzingIn, FuzzingOut

# The CWE of each crash kind the sanitizers name (https://cwe.mitre.org).
CWE = {
    "heap-buffer-overflow": "CWE-122",
    "stack-buffer-overflow": "CWE-121",
    "dynamic-stack-buffer-overflow": "CWE-121",
    "global-buffer-overflow": "CWE-787",
    "stack-buffer-underflow": "CWE-124",
    "heap-use-after-free": "CWE-416",
    "stack-use-after-return": "CWE-562",
    "stack-use-after-scope": "CWE-416",
    "double-free": "CWE-415",
    "attempting-double-free": "CWE-415",
    "bad-free": "CWE-590",
    "SEGV": "CWE-476",
    "memcpy-param-overlap": "CWE-475",
    "memory-leak": "CWE-401",
    "out-of-memory": "CWE-770",
    "timeout": "CWE-835",
    "stack-overflow": "CWE-674",
}


class InvalidFuzzingOutput(InvalidInput):
    code = "INVALID_FUZZING_OUTPUT"


def read_output(body: FuzzingIn) -> Stats:
    """The run's figures (workers' logs summed) and every crash in it, or
    InvalidFuzzingOutput naming the first thing that is not what the engine writes."""
    try:
        if body.engine is FuzzEngine.LIBFUZZER:
            if not body.logs or body.fuzzer_stats is not None or body.crash_files:
                raise InvalidFuzzingOutput(
                    "libFuzzer runs are sent as logs (each worker's stderr), "
                    "without fuzzer_stats or crash_files"
                )
            return _merge([libfuzzer(text) for text in body.logs])
        if body.fuzzer_stats is None or body.logs:
            raise InvalidFuzzingOutput(
                "AFL++ runs are sent as fuzzer_stats (and crash_files), without logs"
            )
        return afl_stats(body.fuzzer_stats, [(c.file, c.output) for c in body.crash_files])
    except OutputProblem as problem:
        raise InvalidFuzzingOutput(
            f"The {body.engine.value} output is not valid: {problem}"
        ) from None


def _merge(workers: list[Stats]) -> Stats:
    """Workers run side by side: executions and rates add up, the run lasts as long as
    the longest, coverage is the best any reached (edges overlap, so never a sum)."""
    rates = [w.execs_per_second for w in workers if w.execs_per_second is not None]
    durations = [w.duration_seconds for w in workers if w.duration_seconds is not None]
    edges = [w.coverage_edges for w in workers if w.coverage_edges is not None]
    percents = [w.coverage_percent for w in workers if w.coverage_percent is not None]
    corpora = [w.corpus_size for w in workers if w.corpus_size is not None]
    return Stats(
        duration_seconds=max(durations) if durations else None,
        executions=sum(w.executions for w in workers),
        execs_per_second=sum(rates) if rates else None,
        coverage_edges=max(edges) if edges else None,
        coverage_percent=max(percents) if percents else None,
        corpus_size=max(corpora) if corpora else None,
        crashes=[c for w in workers for c in w.crashes],
    )


def _crash_finding(target: str, crash: Crash) -> ParsedFinding:
    top = crash.frames[0] if crash.frames else ""
    return ParsedFinding(
        identifier=f"FUZZ-{crash.stack_hash[:16]}",
        title=f"{crash.kind} in {top.split(' ', 1)[0] or target} (fuzzing {target})"[:500],
        severity=crash.severity,
        cwe=CWE.get(crash.kind),
        component=target[:300],
        location=top[:500],
    )


async def import_campaign(
    session: AsyncSession,
    principal: Principal,
    asset: SecurityAsset,
    body: FuzzingIn,
    stats: Stats,
    now: datetime,
    sla_days: dict[str, int],
) -> FuzzingCampaign:
    distinct: dict[str, tuple[Crash, int]] = {}
    for crash in stats.crashes:
        first, count = distinct.get(crash.stack_hash, (crash, 0))
        if first is not crash:
            first.artifacts.extend(a for a in crash.artifacts if a not in first.artifacts)
        distinct[crash.stack_hash] = (first, count + 1)
    campaign = FuzzingCampaign(
        team_id=asset.team_id,
        asset_id=asset.id,
        target=body.target,
        engine=body.engine.value,
        started_at=stats.started_at,
        duration_seconds=stats.duration_seconds,
        executions=stats.executions,
        execs_per_second=stats.execs_per_second,
        coverage_edges=stats.coverage_edges,
        coverage_percent=stats.coverage_percent,
        corpus_size=stats.corpus_size,
        crashes_total=len(stats.crashes),
        crashes_unique=len(distinct),
        created_by=principal.user_id or None,
        created_at=now,
    )
    session.add(campaign)
    await session.flush()
    for stack_hash, (crash, count) in distinct.items():
        finding_id = (
            await _finding(session, asset, body.target, crash, now, sla_days)
            if body.create_findings
            else None
        )
        session.add(
            FuzzingCrash(
                campaign_id=campaign.id,
                stack_hash=stack_hash,
                kind=crash.kind,
                access=crash.access,
                severity=crash.severity,
                frames=crash.frames[:20],
                summary=crash.summary,
                count=count,
                artifacts=crash.artifacts[:100],
                finding_id=finding_id,
            )
        )
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("Another import made the same finding at the same time; retry") from None
    return campaign


async def _finding(
    session: AsyncSession,
    asset: SecurityAsset,
    target: str,
    crash: Crash,
    now: datetime,
    sla_days: dict[str, int],
) -> int:
    parsed = _crash_finding(target, crash)
    fp = service.fingerprint(asset.id, Scanner.FUZZING, parsed)
    found = await session.scalar(select(Finding).where(Finding.fingerprint == fp))
    if found is not None:
        found.last_seen = now
        if found.status == FindingStatus.FIXED:  # it crashes again: not fixed after all
            found.status, found.fixed_at, found.overdue_notified_at = FindingStatus.OPEN, None, None
        return found.id
    finding = Finding(
        team_id=asset.team_id,
        asset_id=asset.id,
        scanner=Scanner.FUZZING.value,
        fingerprint=fp,
        identifier=parsed.identifier,
        cwe=parsed.cwe,
        title=parsed.title,
        severity=parsed.severity,
        component=parsed.component,
        version="",
        fixed_version="",
        location=parsed.location,
        status=FindingStatus.OPEN.value,
        first_seen=now,
        last_seen=now,
        due_at=now + timedelta(days=sla_days[parsed.severity]),
        attack_techniques=[],
    )
    session.add(finding)
    await session.flush()
    return finding.id


def campaigns_query(
    principal: Principal, asset_id: int | None = None, engine: FuzzEngine | None = None
) -> Select[Any]:
    stmt = readable(select(FuzzingCampaign), FuzzingCampaign, principal)
    if asset_id is not None:
        stmt = stmt.where(FuzzingCampaign.asset_id == asset_id)
    if engine is not None:
        stmt = stmt.where(FuzzingCampaign.engine == engine.value)
    return stmt.order_by(FuzzingCampaign.id.desc())


async def outputs(session: AsyncSession, campaigns: Sequence[FuzzingCampaign]) -> list[FuzzingOut]:
    ids = [c.id for c in campaigns]
    crashes: dict[int, list[CrashOut]] = {i: [] for i in ids}
    rows = await session.scalars(
        select(FuzzingCrash)
        .where(FuzzingCrash.campaign_id.in_(ids))
        .order_by(FuzzingCrash.campaign_id, FuzzingCrash.id)
    )
    for c in rows:
        crashes[c.campaign_id].append(
            CrashOut(
                id=c.id,
                stack_hash=c.stack_hash,
                kind=c.kind,
                access=c.access,
                severity=c.severity,
                frames=c.frames,
                summary=c.summary,
                count=c.count,
                artifacts=c.artifacts,
                finding_id=c.finding_id,
            )
        )
    return [
        FuzzingOut(
            id=c.id,
            team_id=c.team_id,
            asset_id=c.asset_id,
            target=c.target,
            engine=FuzzEngine(c.engine),
            started_at=c.started_at,
            duration_seconds=c.duration_seconds,
            executions=c.executions,
            execs_per_second=c.execs_per_second,
            coverage_edges=c.coverage_edges,
            coverage_percent=c.coverage_percent,
            corpus_size=c.corpus_size,
            crashes_total=c.crashes_total,
            crashes_unique=c.crashes_unique,
            crashes=crashes[c.id],
            created_at=c.created_at,
        )
        for c in campaigns
    ]

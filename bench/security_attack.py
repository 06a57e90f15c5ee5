"""Security benchmark for ATT&CK coverage and fuzzing output, each against a floor
measured in the same run:

- the coverage view (`security.attack.coverage`) over an asset's findings, a share of
  them tagged with technique ids, against reading the same tagged rows' column alone;
- reading a long libFuzzer log (`fuzzing_parse.libfuzzer`: status lines and crash
  reports) against splitting the same text into lines.

Runs on a PostgreSQL database it creates on 127.0.0.1:5432 (user postgres, trust) and
drops, and with `--sqlite` on a SQLite file in a temporary directory. Best of three.

    .venv/bin/python bench/security_attack.py                       # 50,000 findings
    .venv/bin/python bench/security_attack.py --findings 5000 --sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from pathlib import Path
from typing import Any

from common import against_floor, load_line, migrated, postgres_url, scratch_database, sqlite_url
from sqlalchemy import String, cast, select

from opscenter.attack.catalogue import catalogue
from opscenter.config import DEFAULT_SLA_DAYS
from opscenter.core.clock import utcnow
from opscenter.core.principal import SYSTEM
from opscenter.models import Finding, SecurityAsset, Team
from opscenter.security import attack, service
from opscenter.security.fuzzing_parse import libfuzzer
from opscenter.security.importers import ParsedFinding
from opscenter.security.importers.formats import Scanner

COVERAGE_LIMIT = 3.0  # x reading the tagged rows' column alone
PARSE_LIMIT = 10.0  # x splitting the log into lines
ROUNDS = 3
FIXTURES = Path(__file__).resolve().parents[1] / "tests/security/fixtures/fuzzing"


def verdict(seconds: float, floor: float, limit: float) -> str:
    return against_floor(seconds, floor, limit, digits=3)


def best(times: list[float]) -> float:
    return min(times)


def tagged_findings(count: int) -> list[ParsedFinding]:
    """Findings of which every third names one to three techniques or sub-techniques."""
    rng = random.Random(11)
    ids = list(catalogue().techniques)
    return [
        ParsedFinding(
            identifier=f"rule-{n}",
            title=f"rule {n} matched",
            severity=rng.choice(["critical", "high", "medium", "low"]),
            location=f"logs/host{n % 50}.evtx:{n}",
            attack_techniques=tuple(rng.sample(ids, rng.randint(1, 3))) if n % 3 == 0 else (),
        )
        for n in range(count)
    ]


async def coverage_bench(url: str, findings: int, label: str) -> None:
    async with migrated(url) as db:
        async with db.write_session() as session:
            team = Team(name=f"bench-{uuid.uuid4().hex[:6]}")
            session.add(team)
            await session.flush()
            asset = SecurityAsset(team_id=team.id, name="siem", kind="service")
            session.add(asset)
            await session.flush()
            await service.import_findings(
                session,
                SYSTEM,
                asset,
                Scanner.SARIF,
                tagged_findings(findings),
                service.ReportFile("sigma.sarif", "0" * 64, 0),
                utcnow(),
                dict(DEFAULT_SLA_DAYS),
            )
            await session.commit()
        floor_times, view_times = [], []
        referenced: Any = None
        for _ in range(ROUNDS):
            async with db.read_session() as session:
                started = time.perf_counter()
                rows = (
                    await session.execute(
                        select(Finding.attack_techniques).where(
                            cast(Finding.attack_techniques, String) != "[]"
                        )
                    )
                ).all()
                floor_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                view = await attack.coverage(session, SYSTEM)
                view_times.append(time.perf_counter() - started)
                referenced = sum(t.techniques_referenced for t in view.tactics)
        floor = best(floor_times)
        print(f"[{label}] {findings:,} findings, {len(rows):,} tagged: read alone {floor:7.3f} s")
        print(
            f"[{label}] coverage view:     {verdict(best(view_times), floor, COVERAGE_LIMIT)}"
            f"  ({referenced} technique cells referenced)"
        )


def parse_bench(repeats: int) -> None:
    """A long campaign's log: the real log's status lines many times over, then its crash."""
    real = (FIXTURES / "libfuzzer-segv.log").read_text().splitlines(keepends=True)
    status = [line for line in real if line.startswith("#")]
    head = [line for line in real if line.startswith("INFO")]
    tail = real[len(head) + len(status) :]
    text = "".join(head + status * repeats + tail)
    floor = best([_timed(text.splitlines) for _ in range(ROUNDS)])
    parsed = best([_timed(lambda: libfuzzer(text)) for _ in range(ROUNDS)])
    lines = text.count("\n")
    print(f"libFuzzer log: {lines:,} lines, {len(text) / 2**20:.1f} MiB: splitlines {floor:.3f} s")
    print(f"libFuzzer parse:       {verdict(parsed, floor, PARSE_LIMIT)}")


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--findings", type=int, default=50_000)
    parser.add_argument("--log-repeats", type=int, default=20_000)
    parser.add_argument("--sqlite", action="store_true", help="also on SQLite")
    args = parser.parse_args()
    parse_bench(args.log_repeats)
    with scratch_database("oc_bench_attack") as name:
        asyncio.run(coverage_bench(postgres_url(name), args.findings, "postgresql"))
    if args.sqlite:
        with sqlite_url() as url:
            asyncio.run(coverage_bench(url, args.findings, "sqlite"))
    print(load_line())


if __name__ == "__main__":
    main()

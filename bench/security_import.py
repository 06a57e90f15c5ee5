"""Security benchmark: importing a generated Trivy JSON report of 50,000 findings against
`json.load` of the same file alone, in the same run; then reimporting the same file (all
duplicates: nothing new, nothing closed) against the same bound; peak memory of each;
the best of three rounds each.

Runs the route's own code (`formats.read` then `service.import_findings`, committed) on
a PostgreSQL database it creates on 127.0.0.1:5432 (user postgres, trust) and drops, and
with `--sqlite` on a SQLite file in a temporary directory.

    .venv/bin/python bench/security_import.py                      # 50,000 findings
    .venv/bin/python bench/security_import.py --findings 5000 --sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import tempfile
import time
import uuid
from pathlib import Path

from common import (
    Peak,
    against_floor,
    load_line,
    migrated,
    postgres_url,
    scratch_database,
    sqlite_url,
)

from opscenter.config import DEFAULT_SLA_DAYS
from opscenter.core.clock import utcnow
from opscenter.core.db import Database
from opscenter.core.principal import SYSTEM
from opscenter.models import SecurityAsset, Team
from opscenter.security import service
from opscenter.security.importers.formats import Scanner, read

IMPORT_LIMIT = 5.0  # x json.load of the same file alone
ROUNDS = 3
SEVERITIES = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]
VECTORS = [
    f"CVSS:3.1/AV:{av}/AC:{ac}/PR:{pr}/UI:N/S:U/C:{c}/I:{i}/A:N"
    for av in ("N", "L")
    for ac in ("L", "H")
    for pr in ("N", "L")
    for c in ("H", "L")
    for i in ("H", "N")
]


def generate(path: Path, findings: int) -> None:
    """A Trivy image report (SchemaVersion 2) spread over 50 targets, as Trivy writes it."""
    rng = random.Random(7)
    per_target = max(1, findings // 50)
    results = []
    for t in range(0, findings, per_target):
        vulns = []
        for n in range(t, min(t + per_target, findings)):
            package = f"lib{n % 4000:04d}"
            vulns.append(
                {
                    "VulnerabilityID": f"CVE-20{20 + n % 6}-{10000 + n}",
                    "PkgID": f"{package}@1.{n % 30}.{n % 7}",
                    "PkgName": package,
                    "InstalledVersion": f"1.{n % 30}.{n % 7}",
                    "FixedVersion": f"1.{n % 30}.{n % 7 + 1}" if n % 3 else "",
                    "Status": "fixed" if n % 3 else "affected",
                    "SeveritySource": "nvd",
                    "PrimaryURL": f"https://avd.aquasec.com/nvd/cve-2024-{10000 + n}",
                    "Title": f"{package}: out-of-bounds read in parser ({n})",
                    "Description": "A flaw was found in the parser. " * 4,
                    "Severity": rng.choice(SEVERITIES),
                    "CweIDs": [f"CWE-{rng.choice((79, 89, 125, 787, 416, 20))}"],
                    "CVSS": {"nvd": {"V3Vector": rng.choice(VECTORS), "V3Score": 0.0}},
                    "PublishedDate": "2024-03-01T00:00:00Z",
                    "LastModifiedDate": "2024-06-01T00:00:00Z",
                }
            )
        results.append(
            {
                "Target": f"registry.local/app:{t // per_target} (debian 12.8)",
                "Class": "os-pkgs",
                "Type": "debian",
                "Vulnerabilities": vulns,
            }
        )
    report = {
        "SchemaVersion": 2,
        "CreatedAt": "2026-12-01T10:00:00Z",
        "ArtifactName": "registry.local/app:1",
        "ArtifactType": "container_image",
        "Results": results,
    }
    path.write_text(json.dumps(report))


async def import_once(
    db: Database, asset_id: int, path: Path
) -> tuple[float, float, dict[str, int]]:
    size = await asyncio.to_thread(lambda: path.stat().st_size)
    with Peak() as peak:
        started = time.perf_counter()
        scanner, parsed = await asyncio.to_thread(read, path, Scanner.TRIVY)
        async with db.write_session() as session:
            asset = await session.get(SecurityAsset, asset_id)
            assert asset is not None
            imp = await service.import_findings(
                session,
                SYSTEM,
                asset,
                scanner,
                parsed,
                service.ReportFile(path.name, "0" * 64, size),
                utcnow(),
                dict(DEFAULT_SLA_DAYS),
            )
            await session.commit()
        elapsed = time.perf_counter() - started
    counts = {"reported": imp.reported, "new": imp.new, "closed": imp.closed}
    return elapsed, peak.peak - peak.base, counts


def verdict(seconds: float, floor: float) -> str:
    return against_floor(seconds, floor, IMPORT_LIMIT)


def load_alone(path: Path, *, collector: bool = True) -> tuple[float, float]:
    """`json.load` of the file; with `collector=False` as our reader runs it, the cycle
    collector paused (the stricter floor: it costs json.load about half its time)."""
    with Peak() as peak:
        if not collector:
            gc.disable()
        try:
            started = time.perf_counter()
            with path.open("rb") as f:
                json.load(f)
            return time.perf_counter() - started, peak.peak - peak.base
        finally:
            gc.enable()


async def run(url: str, findings: int, label: str) -> None:
    """Each figure is the best of ROUNDS (the machine is shared: the best is the one least
    disturbed), the imports each into an asset of their own."""
    async with migrated(url) as db:
        async with db.write_session() as session:
            team = Team(name=f"bench-{uuid.uuid4().hex[:6]}")
            session.add(team)
            await session.flush()
            assets = [
                SecurityAsset(team_id=team.id, name=f"app{i}", kind="service")
                for i in range(ROUNDS)
            ]
            session.add_all(assets)
            await session.commit()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trivy.json"
            await asyncio.to_thread(generate, path, findings)
            size = path.stat().st_size / 2**20
            print(f"[{label}] Trivy JSON report: {findings:,} findings, {size:.0f} MiB")
            floor, floor_mem = min(load_alone(path) for _ in range(ROUNDS))
            print(f"[{label}] json.load alone:   {floor:7.2f} s  peak +{floor_mem:.0f} MiB")
            paused = min(load_alone(path, collector=False)[0] for _ in range(ROUNDS))
            print(f"[{label}] json.load, collector paused: {paused:.2f} s")
            firsts, agains = [], []
            for asset in assets:
                first = await import_once(db, asset.id, path)
                assert first[2] == {"reported": findings, "new": findings, "closed": 0}, first
                again = await import_once(db, asset.id, path)
                assert again[2] == {"reported": findings, "new": 0, "closed": 0}, again
                firsts.append(first[:2])
                agains.append(again[:2])
            (first_s, first_mem), (again_s, again_mem) = min(firsts), min(agains)
            print(
                f"[{label}] import:            {verdict(first_s, floor)}  peak +{first_mem:.0f} MiB"
            )
            print(
                f"[{label}] reimport (dups):   {verdict(again_s, floor)}  peak +{again_mem:.0f} MiB"
            )
            print(
                f"[{label}] against json.load with the collector paused: import "
                f"{first_s / paused:.1f}x, reimport {again_s / paused:.1f}x"
            )
        print(f"[{label}] {load_line()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--findings", type=int, default=50_000)
    parser.add_argument("--sqlite", action="store_true", help="also on SQLite")
    args = parser.parse_args()
    with scratch_database("oc_bench_security") as name:
        asyncio.run(run(postgres_url(name), args.findings, "postgresql"))
    if args.sqlite:
        with sqlite_url() as url:
            asyncio.run(run(url, args.findings, "sqlite"))


if __name__ == "__main__":
    main()

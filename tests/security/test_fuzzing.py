"""Fuzzing results from real libFuzzer and AFL++ output (tests/security/fixtures/fuzzing,
see its README): the figures as the engines wrote them, crashes deduplicated by stack
hash across workers and builds, each distinct crash a finding of the asset; output that
is not the engine's refused with nothing kept; team scoping and roles."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select

from opscenter.models import Finding, FuzzingCampaign
from opscenter.security.fuzzing_parse import afl_stats, libfuzzer
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.security.helpers import FIXTURES, VULNS, findings, new_asset, own_team

FUZZ = FIXTURES / "fuzzing"
RESULTS = "/api/v1/security/fuzzing-results"
HEAP = "crash-422958960e8e6885f38687fd5e2413b9d89a268e"
SEGV = "crash-ad2206fbdb114b416994ebe43ed0820ab4ca31f9"
SEGV_O1 = "crash-7fa755c99c1332dcf0a2d24b7080a39a13a12418"
AFL_SEGV = "id:000000,sig:11,src:000000,time:20,execs:36,op:havoc,rep:2"
AFL_ABRT = "id:000001,sig:06,src:000000,time:60,execs:81,op:havoc,rep:4"


def log(name: str) -> str:
    return (FUZZ / name).read_text()


def afl_body(asset_id: int, **over: Any) -> dict[str, Any]:
    return {
        "asset_id": asset_id,
        "target": "parse_record",
        "engine": "aflplusplus",
        "fuzzer_stats": log("afl/fuzzer_stats"),
        "crash_files": [
            {"file": AFL_SEGV, "output": log("afl/afl-replay-sig11.log")},
            {"file": AFL_ABRT, "output": log("afl/afl-replay-sig06.log")},
        ],
        **over,
    }


def libfuzzer_body(asset_id: int, *logs: str, **over: Any) -> dict[str, Any]:
    return {
        "asset_id": asset_id,
        "target": "parse_record",
        "engine": "libfuzzer",
        "logs": [log(n) for n in logs],
        **over,
    }


async def stored(api: Api) -> tuple[int, int]:
    async with api.app.state.ctx.db.read_session() as s:
        campaigns = await s.scalar(select(func.count(FuzzingCampaign.id)))
        found = await s.scalar(select(func.count(Finding.id)).where(Finding.scanner == "fuzzing"))
    return int(campaigns or 0), int(found or 0)


def test_libfuzzer_logs_read_as_written() -> None:
    heap = libfuzzer(log("libfuzzer-heap-overflow.log"))
    # stat::number_of_executed_units 69; last status cov 8 of 13 PCs; corp 4.
    assert (heap.executions, heap.coverage_edges, heap.coverage_percent, heap.corpus_size) == (
        69,
        8,
        61.54,
        4,
    )
    assert heap.duration_seconds is None and heap.execs_per_second is None  # crashed in 0 s
    [crash] = heap.crashes
    assert (crash.kind, crash.access, crash.severity, crash.artifacts) == (
        "heap-buffer-overflow",
        "READ",
        "high",
        [HEAP],
    )
    # The runtime's frames (__asan_memcpy, fuzzer::..., main) are not the program's.
    assert crash.frames == ["parse_record parse_record.c", "LLVMFuzzerTestOneInput parse_record.c"]

    clean = libfuzzer(log("libfuzzer-fixed-clean.log"))
    # "Done 1988602 runs in 6 second(s)", average_exec_per_sec 331433, cov 1 of 1 PC.
    assert (clean.executions, clean.duration_seconds, clean.execs_per_second) == (
        1988602,
        6.0,
        331433.0,
    )
    assert (clean.coverage_edges, clean.coverage_percent, clean.crashes) == (1, 100.0, [])

    segv, segv_o1 = libfuzzer(log("libfuzzer-segv.log")), libfuzzer(log("libfuzzer-segv-O1.log"))
    # Two builds, other addresses and lines: the same crash.
    assert segv.crashes[0].stack_hash == segv_o1.crashes[0].stack_hash
    assert segv.crashes[0].stack_hash != crash.stack_hash
    assert (segv.crashes[0].kind, segv.crashes[0].severity) == ("SEGV", "medium")
    overlap = libfuzzer(log("libfuzzer-param-overlap.log")).crashes[0]
    assert (overlap.kind, overlap.access) == ("memcpy-param-overlap", None)
    assert overlap.stack_hash != crash.stack_hash  # same place, another kind of bug


def test_afl_stats_read_as_written() -> None:
    stats = afl_stats(
        log("afl/fuzzer_stats"),
        [(AFL_SEGV, log("afl/afl-replay-sig11.log")), (AFL_ABRT, "")],
    )
    assert stats.started_at == datetime.fromtimestamp(1796618365, UTC)
    assert (stats.duration_seconds, stats.executions, stats.execs_per_second) == (
        25.0,
        19213,
        768.15,
    )
    assert (stats.coverage_edges, stats.coverage_percent, stats.corpus_size) == (14, 73.68, 7)
    segv, abort = stats.crashes
    assert (segv.kind, segv.access, segv.artifacts) == ("SEGV", "READ", [AFL_SEGV])
    # Not replayed: known by its signal only.
    assert (abort.kind, abort.frames, abort.artifacts) == ("signal-06", [], [AFL_ABRT])
    # The AFL++ harness's main is not part of the crash: the same SEGV as libFuzzer's.
    assert segv.stack_hash == libfuzzer(log("libfuzzer-segv.log")).crashes[0].stack_hash


async def test_campaigns_dedup_crashes_and_make_findings(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        asset = await new_asset(c, kind="repository")
        r = await c.post(
            RESULTS,
            json=libfuzzer_body(
                asset["id"],
                "libfuzzer-heap-overflow.log",
                "libfuzzer-segv.log",
                "libfuzzer-segv-O1.log",
            ),
        )
        assert r.status_code == 201, r.text
        run = r.json()
        # Three workers: 69 + 40107 + 32298 executions; the best coverage, cov 11 of 13 PCs.
        assert (run["executions"], run["coverage_edges"], run["coverage_percent"]) == (
            72474,
            11,
            84.62,
        )
        assert (run["crashes_total"], run["crashes_unique"], run["corpus_size"]) == (3, 2, 7)
        assert run["duration_seconds"] is None and run["execs_per_second"] is None
        heap, segv = run["crashes"]
        assert (heap["kind"], heap["severity"], heap["count"], heap["artifacts"]) == (
            "heap-buffer-overflow",
            "high",
            1,
            [HEAP],
        )
        assert (segv["kind"], segv["count"], segv["artifacts"]) == ("SEGV", 2, [SEGV, SEGV_O1])
        made = {f["id"]: f for f in await findings(c, asset_id=asset["id"], scanner="fuzzing")}
        assert set(made) == {heap["finding_id"], segv["finding_id"]}
        heap_finding = made[heap["finding_id"]]
        assert (heap_finding["severity"], heap_finding["cwe"], heap_finding["component"]) == (
            "high",
            "CWE-122",
            "parse_record",
        )
        assert heap_finding["identifier"] == f"FUZZ-{heap['stack_hash'][:16]}"
        assert heap_finding["location"] == "parse_record parse_record.c"
        assert made[segv["finding_id"]]["cwe"] == "CWE-476"

        # AFL++ on the same target finds the same SEGV: the same finding, seen again.
        afl = await c.post(RESULTS, json=afl_body(asset["id"]))
        assert afl.status_code == 201, afl.text
        second = afl.json()
        assert (second["engine"], second["executions"], second["coverage_percent"]) == (
            "aflplusplus",
            19213,
            73.68,
        )
        assert (second["started_at"], second["duration_seconds"]) == ("2026-12-07T04:39:25Z", 25.0)
        assert (second["crashes_total"], second["crashes_unique"]) == (2, 2)
        by_kind = {x["kind"]: x for x in second["crashes"]}
        assert by_kind["SEGV"]["finding_id"] == segv["finding_id"]
        assert by_kind["SEGV"]["artifacts"] == [AFL_SEGV]
        # AFL++'s harness writes where libFuzzer's read: the same stack, the same finding.
        assert by_kind["heap-buffer-overflow"]["access"] == "WRITE"
        assert by_kind["heap-buffer-overflow"]["finding_id"] == heap["finding_id"]

        quiet = await c.post(
            RESULTS,
            json=libfuzzer_body(asset["id"], "libfuzzer-fixed-clean.log", create_findings=False),
        )
        assert quiet.json()["crashes"] == [] and quiet.json()["duration_seconds"] == 6.0

        listed = (await c.get(RESULTS)).json()
        assert [x["id"] for x in listed["items"]] == [
            quiet.json()["id"],
            second["id"],
            run["id"],
        ]
        assert listed["total"] == 3
        page = (await c.get(RESULTS, params={"limit": 2})).json()
        rest = (await c.get(RESULTS, params={"limit": 2, "cursor": page["next_cursor"]})).json()
        assert [x["id"] for x in rest["items"]] == [run["id"]]
        only_afl = (await c.get(RESULTS, params={"engine": "aflplusplus"})).json()
        assert [x["id"] for x in only_afl["items"]] == [second["id"]]
        assert (await c.get(f"{RESULTS}/{run['id']}")).json() == run
        assert len(await findings(c, asset_id=asset["id"], scanner="fuzzing")) == 2


async def test_output_that_is_not_the_engines_keeps_nothing(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        asset = await new_asset(c)
        before = await stored(api)
        bad_bodies = [
            libfuzzer_body(asset["id"]) | {"logs": ["Segmentation fault (core dumped)\n"]},
            libfuzzer_body(asset["id"]) | {"logs": []},
            libfuzzer_body(asset["id"], "libfuzzer-segv.log") | {"fuzzer_stats": "x"},
            afl_body(asset["id"], fuzzer_stats="start_time : 1\nlast_update : 2\n"),
            afl_body(asset["id"], fuzzer_stats=log("afl/fuzzer_stats").replace("19213", "many")),
            afl_body(asset["id"], logs=[log("libfuzzer-segv.log")]),
            afl_body(asset["id"], crash_files=[{"file": "README.txt", "output": ""}]),
            afl_body(asset["id"], crash_files=[{"file": AFL_SEGV, "output": "no report here"}]),
        ]
        for body in bad_bodies:
            assert_error(await c.post(RESULTS, json=body), 422, "INVALID_FUZZING_OUTPUT")
        for body in (
            afl_body(asset["id"], engine="honggfuzz"),
            afl_body(asset["id"], target=""),
            afl_body(asset["id"], extra=1),
            afl_body(asset["id"], crash_files=[{"file": AFL_SEGV, "output": "\x00"}]),
        ):
            assert_error(await c.post(RESULTS, json=body), 422, "VALIDATION_ERROR")
        assert_error(await c.post(RESULTS, json=afl_body(2_000_000_000)), 404, "NOT_FOUND")
        assert await stored(api) == before


async def test_team_scoping_and_roles(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    mine = await own_team(api, admin, make_user)
    theirs = await own_team(api, admin, make_user)
    viewer = await make_user("viewer", team_ids=[mine.id])
    async with mine.client as c:
        asset = await new_asset(c)
        run = (await c.post(RESULTS, json=afl_body(asset["id"]))).json()
    async with theirs.client as t:
        assert_error(await t.post(RESULTS, json=afl_body(asset["id"])), 404, "NOT_FOUND")
        assert_error(await t.get(f"{RESULTS}/{run['id']}"), 404, "NOT_FOUND")
        assert (await t.get(RESULTS)).json()["total"] == 0
        assert await findings(t, scanner="fuzzing") == []
    async with viewer.client(api) as v:
        assert [x["id"] for x in (await v.get(RESULTS)).json()["items"]] == [run["id"]]
        assert_error(await v.post(RESULTS, json=afl_body(asset["id"])), 403, "FORBIDDEN")
    async with api.client() as anonymous:
        assert_error(await anonymous.get(RESULTS), 401, "UNAUTHORIZED")
        assert_error(await anonymous.post(RESULTS, json=afl_body(asset["id"])), 401, "UNAUTHORIZED")
        assert_error(await anonymous.get(f"{VULNS}?scanner=fuzzing"), 401, "UNAUTHORIZED")

"""Cost imports through the API on SQLite and PostgreSQL: the three formats, malformed
rows reported (line, column, reason), wrong encodings and wrong formats refused whole,
the same file imported once, and who may import what."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from opscenter.finops import importer
from opscenter.models import CostImport, CostLine, CostRollup, CostRollupPart, CostTagSet
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error, role_user
from tests.finops.helpers import (
    BASE,
    focus_csv,
    focus_row,
    imported,
    own_team,
    to_csv,
    upload,
)
from tests.schedules.helpers import uid


async def lines_of(api: Api, import_id: int) -> int:
    async with api.app.state.ctx.db.read_session() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(CostLine).where(CostLine.import_id == import_id)
            )
            or 0
        )


async def test_focus_file_with_malformed_rows_reports_them(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    good = [focus_row("2026-10-0" + str(d), "Amazon RDS", f"{d}.25") for d in range(1, 6)]
    bad = [
        focus_row("2026-10-07", "Amazon S3", "twelve"),  # line 7
        focus_row("2026-10-08", "Amazon S3", "1.00", currency="dollars"),  # line 8
        focus_row("2026-13-40", "Amazon S3", "1.00"),  # line 9
        focus_row("2026-10-09", "", "1.00"),  # line 10
        ["too", "few", "fields"],  # line 11
    ]
    async with team.client as c:
        report = await imported(api, c, focus_csv(good + bad), filename="october.csv")
    assert report["status"] == "completed", report
    assert report["format"] == "focus" and report["filename"] == "october.csv"
    assert (report["rows_total"], report["rows_imported"], report["rows_rejected"]) == (10, 5, 5)
    rejected = {(r["line"], r["column"]) for r in report["rejected"]}
    assert rejected == {
        (7, "BilledCost"),
        (8, "BillingCurrency"),
        (9, "BillingPeriodStart"),
        (10, "ServiceName"),
        (11, None),
    }
    assert all(r["reason"] for r in report["rejected"])
    assert await lines_of(api, report["id"]) == 5


async def test_same_file_twice_is_imported_once(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    content = focus_csv([focus_row("2026-10-01", uid("svc-"), "3.5")])
    async with team.client as c:
        first = await imported(api, c, content)
        again = await upload(c, content)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == first["id"]
        assert "already imported" in again.json()["message"]
        listed = (await c.get(f"{BASE}/imports")).json()
    assert [i["id"] for i in listed["items"]] == [first["id"]]
    assert await lines_of(api, first["id"]) == 1


async def test_aws_cur_and_generic_formats(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    cur = to_csv(
        [
            "bill/BillingPeriodStartDate",
            "lineItem/UsageStartDate",
            "lineItem/UsageEndDate",
            "lineItem/LineItemType",
            "lineItem/ProductCode",
            "product/ProductName",
            "lineItem/ResourceId",
            "product/regionCode",
            "lineItem/UnblendedCost",
            "savingsPlan/SavingsPlanEffectiveCost",
            "lineItem/CurrencyCode",
            "resourceTags/user:team",
        ],
        [
            [
                "2026-10-01T00:00:00Z",
                "2026-10-02T00:00:00Z",
                "2026-10-02T01:00:00Z",
                "Usage",
                "AmazonEC2",
                "Amazon Elastic Compute Cloud",
                "i-1",
                "eu-west-1",
                "2.0",
                "",
                "USD",
                "web",
            ],
            [
                "2026-10-01T00:00:00Z",
                "2026-10-02T00:00:00Z",
                "2026-10-02T01:00:00Z",
                "SavingsPlanCoveredUsage",
                "AmazonEC2",
                "Amazon Elastic Compute Cloud",
                "i-2",
                "eu-west-1",
                "3.0",
                "1.2",
                "USD",
                "db",
            ],
            [
                "2026-10-01T00:00:00Z",
                "2026-10-03T00:00:00Z",
                "2026-10-03T01:00:00Z",
                "Credit",
                "AmazonEC2",
                "Amazon Elastic Compute Cloud",
                "",
                "eu-west-1",
                "-0.5",
                "",
                "USD",
                "",
            ],
        ],
    )
    generic = to_csv(
        ["date", "service", "cost", "currency", "provider", "environment", "tag:owner"],
        [
            ["2026-10-02", "Hetzner Cloud", "4.10", "EUR", "Hetzner", "production", "ops"],
            ["2026-10-02", "Hetzner Cloud", "1,00", "EUR", "Hetzner", "production", "ops"],
        ],
    )
    async with team.client as c:
        a = await imported(api, c, cur)
        g = await imported(api, c, generic)
        r = await c.get(
            f"{BASE}/breakdown", params={"window": "2026-10-01,2026-11-01", "aggregate": "service"}
        )
    assert a["format"] == "aws_cur" and a["rows_imported"] == 3, a
    assert g["format"] == "generic" and g["rows_imported"] == 1 and g["rows_rejected"] == 1, g
    assert g["rejected"][0]["column"] == "cost"
    items = {(i["key"], i["currency"]): i for i in r.json()["items"]}
    ec2 = items[("Amazon Elastic Compute Cloud", "USD")]
    # billed: 2 + 3 - 0.5; effective: the savings plan's 1.2 instead of 3.0
    assert (ec2["billed_cost"], ec2["effective_cost"]) == (4.5, 2.7)
    assert items[("Hetzner Cloud", "EUR")]["effective_cost"] == 4.1


@pytest.mark.parametrize(
    ("content", "code_hint"),
    [
        ("ChargePeriodStart,BilledCost\n".encode("utf-16"), "UTF-16"),
        (b"", "empty"),
        (b"\n\n", "header"),
        (b"name,age\nbob,4\n", "Unknown cost file"),
        (b"\xff\xfe\xfa bad header,\xff\n", "UTF-8"),
    ],
)
async def test_files_that_are_not_cost_files_are_refused_at_once(
    api: Api, admin: httpx.AsyncClient, content: bytes, code_hint: str
) -> None:
    before = (await admin.get(f"{BASE}/imports")).json()["total"]
    body = assert_error(await upload(admin, content), 422, "INVALID_COST_FILE")
    assert code_hint in body["detail"]
    assert (await admin.get(f"{BASE}/imports")).json()["total"] == before


async def test_a_file_that_is_not_what_it_says_leaves_nothing(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory
) -> None:
    team = await own_team(api, admin, make_user)
    rows = [focus_row("2026-10-01", "S3", "1.0")] * 3
    latin1 = focus_csv(rows) + "2026-10-01,Café".encode("latin-1") + b"\n"
    async with team.client as c:
        # The header says generic, the file is FOCUS.
        assert_error(await upload(c, focus_csv(rows), format="generic"), 422, "INVALID_COST_FILE")
        # UTF-8 header, Latin-1 further down: the job fails and keeps no line.
        failed = await imported(api, c, latin1)
        assert failed["status"] == "failed" and "UTF-8" in failed["error"], failed
        assert await lines_of(api, failed["id"]) == 0
        # Mostly rejected rows: not this format, nothing kept.
        junk = focus_csv([focus_row("2026-10-01", "S3", "x")] * 3 + rows[:1])
        failed = await imported(api, c, junk)
        assert failed["status"] == "failed" and failed["rows_rejected"] == 3, failed
        assert await lines_of(api, failed["id"]) == 0
        summary = (
            await c.get(f"{BASE}/summary", params={"window": "2026-10-01,2026-11-01"})
        ).json()
        assert summary["totals"] == []
        # A failed file may be sent again: the same import is tried anew.
        retry = await imported(api, c, junk)
        assert retry["id"] == failed["id"] and retry["status"] == "failed"
        fixed = await imported(api, c, latin1.replace("Café".encode("latin-1"), b"Cafe"))
        assert fixed["status"] == "completed", fixed
        assert (fixed["rows_imported"], fixed["rows_rejected"]) == (3, 1)


async def test_upload_limits_roles_and_teams(
    api: Api, admin: httpx.AsyncClient, admin_headers: dict[str, str], make_user: UserFactory
) -> None:
    content = focus_csv([focus_row("2026-10-01", uid("svc-"), "1")])
    assert_error(
        await upload(admin, content, content_type="application/json"), 415, "UNSUPPORTED_MEDIA_TYPE"
    )
    assert_error(await upload(admin, content, format="xlsx"), 422, "VALIDATION_ERROR")
    async with api.client() as anonymous:
        assert_error(await upload(anonymous, content), 401, "UNAUTHORIZED")
    viewer = await role_user(api, admin_headers, "viewer")
    async with viewer.client(api) as v:
        assert_error(await upload(v, content), 403, "FORBIDDEN")
        assert (await v.get(f"{BASE}/imports")).status_code == 200
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        mine = await imported(api, c, content)
        # Another team's id is not theirs to import into.
        assert_error(await upload(c, content, team_id=1), 404, "NOT_FOUND")
    outsider = await own_team(api, admin, make_user)
    async with outsider.client as o:
        assert_error(await o.get(f"{BASE}/imports/{mine['id']}"), 404, "NOT_FOUND")
        assert_error(await o.delete(f"{BASE}/imports/{mine['id']}"), 404, "NOT_FOUND")
    async with team.user.client(api) as c:
        assert (await c.delete(f"{BASE}/imports/{mine['id']}")).status_code == 204
    assert await lines_of(api, mine["id"]) == 0


async def _count(api: Api, model: Any, import_id: int) -> int:
    async with api.app.state.ctx.db.read_session() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(model).where(model.import_id == import_id)
            )
            or 0
        )


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 2 lines, a roll-up part every 4: a short file rolls up in several parts."""
    monkeypatch.setattr(importer, "BATCH_ROWS", 2)
    monkeypatch.setattr(importer, "ROLLUP_ROWS", 4)


async def test_figures_rolled_up_in_parts_are_summed_once(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, small_parts: None
) -> None:
    team = await own_team(api, admin, make_user)
    tags = [{"team": "web"}, {"team": "db"}, {}]
    rows = [
        focus_row("2026-10-0" + str(1 + i % 2), "Amazon S3", "1.5", tags=tags[i % 3])
        for i in range(11)
    ]
    rows += [focus_row("2026-10-01", "Amazon S3", "2", "EUR", tags={"team": "web"})]
    window = {"window": "2026-10-01,2026-10-03"}
    async with team.client as c:
        report = await imported(api, c, focus_csv(rows))
        service = await c.get(f"{BASE}/breakdown", params={**window, "aggregate": "service"})
        tagged = await c.get(f"{BASE}/breakdown", params={**window, "aggregate": "tag:team"})
    assert report["status"] == "completed" and report["rows_imported"] == 12, report
    assert await _count(api, CostRollupPart, report["id"]) == 0
    # One roll-up row per day, dimension, value and currency, whatever the parts.
    async with api.app.state.ctx.db.read_session() as session:
        keys = (
            await session.execute(
                select(
                    CostRollup.day, CostRollup.dimension, CostRollup.value, CostRollup.currency
                ).where(CostRollup.import_id == report["id"])
            )
        ).all()
        lines = await session.scalar(
            select(func.sum(CostRollup.lines)).where(
                CostRollup.import_id == report["id"], CostRollup.dimension == "category"
            )
        )
    assert len(keys) == len(set(keys)) and lines == 12
    items = {(i["key"], i["currency"]): i["effective_cost"] for i in service.json()["items"]}
    assert items == {("Amazon S3", "USD"): 16.5, ("Amazon S3", "EUR"): 2.0}
    items = {(i["key"], i["currency"]): i["effective_cost"] for i in tagged.json()["items"]}
    # 11 USD lines: tags web, db, none in turn (4, 4, 3 lines).
    assert items == {
        ("web", "USD"): 6.0,
        ("db", "USD"): 6.0,
        ("(untagged)", "USD"): 4.5,
        ("web", "EUR"): 2.0,
    }


async def test_an_import_failing_after_some_parts_leaves_nothing(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, small_parts: None
) -> None:
    team = await own_team(api, admin, make_user)
    # Past the first 8 KiB the reader decodes: the failure comes after lines and parts
    # were written and committed.
    rows = [focus_row("2026-10-0" + str(1 + i % 5), "Amazon S3", "1.0") for i in range(200)]
    latin1 = focus_csv(rows) + "2026-10-01,Café".encode("latin-1") + b"\n"
    async with team.client as c:
        failed = await imported(api, c, latin1)
        summary = (
            await c.get(f"{BASE}/summary", params={"window": "2026-10-01,2026-11-01"})
        ).json()
    assert failed["status"] == "failed" and "UTF-8" in failed["error"], failed
    assert failed["rows_total"] >= 2 * importer.ROLLUP_ROWS
    for model in (CostLine, CostRollup, CostRollupPart, CostTagSet):
        assert await _count(api, model, failed["id"]) == 0, model
    assert summary["totals"] == []


async def test_imports_running_together_roll_up_their_own_lines(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, small_parts: None, tmp_path: Path
) -> None:
    """Two imports write at once, so their line ids interleave: each part holds its own
    import's lines only, and each import's figures are its own file's."""
    team = await own_team(api, admin, make_user)
    db = api.app.state.ctx.db
    files = {}
    for n, cost in ((60, "1.5"), (45, "2")):
        path = tmp_path / f"{n}.csv"
        path.write_bytes(focus_csv([focus_row("2026-10-01", "Amazon S3", cost)] * n))
        async with db.write_session() as session:
            imp = CostImport(
                team_id=team.id, filename=path.name, format="focus", sha256=uid("sha-"),
                size_bytes=path.stat().st_size,
            )  # fmt: skip
            session.add(imp)
            await session.commit()
        files[imp.id] = path

    async def ignore(_: float) -> None:
        return None

    await asyncio.gather(
        *(importer.run(db, i, path, importer.Progress(), ignore) for i, path in files.items())
    )
    async with db.read_session() as session:
        totals = dict(
            (
                await session.execute(
                    select(CostRollup.import_id, func.sum(CostRollup.billed_cost))
                    .where(CostRollup.import_id.in_(files), CostRollup.dimension == "category")
                    .group_by(CostRollup.import_id)
                )
            ).all()
        )
    a, b = files
    assert totals == {a: 90 * 10**9, b: 90 * 10**9}
    assert [await _count(api, CostRollupPart, i) for i in files] == [0, 0]

"""Reports over OPSCENTER_SECURITY_IMPORT_SYNC_BYTES are imported by a job: 202 with the
job; a file that is plainly not a report is still a 422 with nothing kept; a report
broken further in fails its job, changes nothing and leaves no file behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from opscenter.models import Job
from tests.conftest import Api, UserFactory
from tests.core.helpers import assert_error
from tests.security.helpers import Vuln, findings, new_asset, own_team, trivy, upload

A = Vuln("CVE-2024-1001", "openssl", "3.0.11", "HIGH", "3.0.13")
B = Vuln("CVE-2024-1002", "zlib1g", "1.2.13", "LOW")


@pytest.fixture
def every_report_large(api: Api) -> Iterator[None]:
    before = api.settings.security_import_sync_bytes
    api.settings.security_import_sync_bytes = 0
    try:
        yield
    finally:
        api.settings.security_import_sync_bytes = before


async def import_jobs(api: Api) -> int:
    async with api.app.state.ctx.db.read_session() as s:
        return int(
            await s.scalar(select(func.count(Job.id)).where(Job.kind == "security_import")) or 0
        )


def spooled(api: Api) -> list[Path]:
    return sorted((Path(api.settings.data_dir) / "tmp").glob("security-*"))


async def test_large_reports_are_imported_by_a_job(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, every_report_large: None
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        asset = await new_asset(c)
        r = await upload(c, trivy([A, B, A]), asset_id=asset["id"])
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["status_url"] == f"/api/v1/jobs/{accepted['job_id']}"
        await api.app.state.ctx.runner.wait(accepted["job_id"], limit_seconds=60)
        job = (await c.get(accepted["status_url"])).json()
        assert job["status"] == "succeeded", job
        assert {k: job["result"][k] for k in ("reported", "new", "closed")} == {
            "reported": 2,
            "new": 2,
            "closed": 0,
        }
        assert {f["identifier"] for f in await findings(c, asset_id=asset["id"])} == {A.id, B.id}
        imp = (await c.get("/api/v1/security/imports")).json()["items"][0]
        assert (imp["id"], imp["asset_id"], imp["scanner"]) == (
            job["result"]["id"],
            asset["id"],
            "trivy",
        )
    assert spooled(api) == []


async def test_a_large_file_that_is_no_report_is_refused_at_once(
    api: Api, admin: httpx.AsyncClient, make_user: UserFactory, every_report_large: None
) -> None:
    team = await own_team(api, admin, make_user)
    async with team.client as c:
        asset = await new_asset(c)
        jobs_before = await import_jobs(api)
        for content in (b"hello, not JSON", b'{"tool": "none of the four"}', b"\xff\xfe{}" * 10):
            assert_error(
                await upload(c, content, asset_id=asset["id"]), 422, "INVALID_SECURITY_REPORT"
            )
        assert_error(await upload(c, trivy([A]), asset_id=2_000_000_000), 404, "NOT_FOUND")
        assert await import_jobs(api) == jobs_before
        assert spooled(api) == []

        # Broken past its start: the job fails and nothing of it is kept.
        broken = trivy([A, B]).replace(b'"PkgName": "zlib1g", ', b"")
        r = await upload(c, broken, asset_id=asset["id"])
        assert r.status_code == 202, r.text
        await api.app.state.ctx.runner.wait(r.json()["job_id"], limit_seconds=60)
        job = (await c.get(r.json()["status_url"])).json()
        assert (job["status"], job["error_code"]) == ("failed", "INVALID_SECURITY_REPORT")
        assert "PkgName" in job["error_message"]
        assert await findings(c, asset_id=asset["id"]) == []
    assert spooled(api) == []

"""A team of one's own per test (so a report's figures are exactly the test's rows), its
storage, generation that waits for the job, and reading a downloaded file."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pypdf import PdfReader

from tests.conftest import Api, CreatedUser, UserFactory
from tests.core.helpers import uid

BASE = "/api/v1/reports"


@dataclass
class Team:
    id: int
    user: CreatedUser
    client: httpx.AsyncClient
    storage: dict[str, Any]


async def own_team(
    api: Api,
    admin: httpx.AsyncClient,
    make_user: UserFactory,
    tmp_path: Path,
    role: str = "operator",
    storage: bool = True,
) -> Team:
    team = (await admin.post("/api/v1/users/teams", json={"name": uid("rep-")})).json()
    provider: dict[str, Any] = {}
    if storage:
        path = tmp_path / f"store-{team['id']}"
        path.mkdir()
        r = await admin.post(
            "/api/v1/storage/providers",
            json={
                "name": uid("st-"),
                "type": "local",
                "config": {"path": str(path)},
                "team_id": team["id"],
            },
        )
        assert r.status_code == 201, r.text
        provider = r.json()
    user = await make_user(role, team_ids=[team["id"]])
    return Team(team["id"], user, user.client(api), provider)


def last_month() -> tuple[str, datetime]:
    """The previous calendar month as a period, and an instant in the middle of it."""
    first = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    middle = (first - timedelta(days=1)).replace(day=10, hour=12)
    return middle.strftime("%Y-%m"), middle


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


async def generate(
    api: Api, client: httpx.AsyncClient, **body: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST /reports/generate, wait for its job; the 202 answer and the ended job."""
    r = await client.post(f"{BASE}/generate", json=body)
    assert r.status_code == 202, r.text
    accepted: dict[str, Any] = r.json()
    job = await api.app.state.ctx.runner.wait(accepted["job_id"], limit_seconds=120)
    return accepted, {"status": job.status, "error_code": job.error_code, "result": job.result}


async def download(client: httpx.AsyncClient, report_id: int, **params: Any) -> httpx.Response:
    r = await client.get(f"{BASE}/{report_id}/download", params=params)
    assert r.status_code == 200, r.text
    return r


def pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)

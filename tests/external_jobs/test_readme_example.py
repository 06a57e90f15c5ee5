"""The README's bash report example, run as written against a real server process."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import LiveServer

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Backup status, recovery points and reports from scripts elsewhere"


def bash_example() -> str:
    text = README.read_text()
    section = text[text.index(SECTION) :]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "data", OPSCENTER_SCHEDULER_INTERVAL="0")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_bash_example_reports_a_backup(live: LiveServer, tmp_path: Path) -> None:
    source = tmp_path / "etc"
    source.mkdir()
    (source / "hosts").write_text("127.0.0.1 localhost\n")
    script = (
        bash_example()
        .replace("http://opscenter:8000", live.base)
        .replace("/backup/etc.tgz", str(tmp_path / "etc.tgz"))
        .replace("/etc ", f"{source} ")
    )
    with live.client() as admin:
        key = admin.post("/api/v1/admin/tokens", json={"name": "script", "role": "operator"})
        out = subprocess.run(
            ["bash", "-e", "-c", script],
            env={**os.environ, "OPSCENTER_KEY": key.json()["key"]},
            capture_output=True,
            text=True,
            check=True,
        )
        assert '"created_job":true' in out.stdout, out.stdout + out.stderr
        [job] = admin.get("/api/v1/external-jobs", params={"q": "etc-tarball"}).json()["items"]
        assert job["last_status"] == "success"
        assert job["last_size_bytes"] == (tmp_path / "etc.tgz").stat().st_size > 0

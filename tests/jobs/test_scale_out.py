"""Scale-out on the machine's real PostgreSQL: two API-only server processes and two
`opscenter worker` processes share one database (the job queue too) and one data dir
(standing for the shared volume or object store). Jobs leave the server process; each runs
once; a lost worker's job is interrupted, cleaned up and retried; SIGTERM hands jobs back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect

from tests.conftest import fresh_pg_database
from tests.live import LiveServer, LiveWorker, wait_job

TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


class Cluster:
    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.data = root / "data"
        env = {
            "OPSCENTER_DATABASE_URL": database_url,
            "OPSCENTER_JOB_ENGINE": "procrastinate",
            "OPSCENTER_EVENT_BUS": "postgres",
            "OPSCENTER_JOB_HEARTBEAT_SECONDS": "0.5",
            "OPSCENTER_JOB_SHUTDOWN_GRACE_SECONDS": "2",
            "OPSCENTER_JWT_SECRET": "scale-out-test-secret-0123456789abcdef",
            "OPSCENTER_LOG_LEVEL": "INFO",
        }
        self.servers = [
            LiveServer(self.data, root / f"server{i}.log", OPSCENTER_RUN_JOBS="false", **env)
            for i in range(2)
        ]
        self.workers = [LiveWorker(self.data, root / f"worker{i}.log", **env) for i in range(2)]

    def start(self) -> None:
        self.servers[0].start()  # migrates and seeds first; the others find it done
        for worker in self.workers:
            worker.start()
        self.servers[1].start()
        self.wait_workers(2)

    def stop(self) -> None:
        for process in (*self.workers, *self.servers):
            with contextlib.suppress(Exception):
                process.stop()

    def live_workers(self) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_workers "
                "WHERE last_heartbeat > now() - interval '2 seconds'"
            ).fetchone()
        return int(row[0]) if row else 0

    def wait_workers(self, count: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error):
                if self.live_workers() >= count:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{count} workers never came up; see {self.root}/worker*.log")

    def revive(self) -> None:
        """Start again whatever a previous test killed or stopped."""
        dead = [w for w in self.workers if w.proc is None or w.proc.poll() is not None]
        for worker in dead:
            worker.start()
        for server in self.servers:
            if server.proc is None or server.proc.poll() is not None:
                server.start()
        if dead:
            self.wait_workers(2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with fresh_pg_database() as url:
        c = Cluster(tmp_path_factory.mktemp("cluster"), url)
        try:
            c.start()
            yield c
        finally:
            c.stop()


@pytest.fixture(autouse=True)
def whole_cluster(cluster: Cluster) -> None:
    cluster.revive()


@pytest.fixture(scope="module")
def files_server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sources")
    with cluster.servers[0].client() as c:
        server = c.post(
            "/api/v1/servers", json={"name": "files", "type": "local", "paths": [str(root)]}
        )
        assert server.status_code == 201, server.text
        return {"id": server.json()["id"], "root": root}


def source_dir(root: Path, name: str, content: str) -> Path:
    path = root / name
    path.mkdir(exist_ok=True)
    (path / "data.txt").write_text(content)
    return path


def huge_source(root: Path, name: str) -> Path:
    """A directory whose backup runs for minutes: a sparse file of 256 GiB."""
    path = root / name
    path.mkdir(exist_ok=True)
    with open(path / "sparse.bin", "wb") as fh:
        fh.truncate(256 * 1024**3)
    return path


def worker_of(cluster: Cluster, job: dict[str, Any]) -> LiveWorker:
    pid = int(str(job["worker"]).rsplit(":", 1)[1])
    return next(w for w in cluster.workers if w.pid == pid)


def retry_of(c: httpx.Client, backup_id: int, seconds: float = 30) -> dict[str, Any]:
    """The backup queued again after `backup_id` was interrupted."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for backup in c.get("/api/v1/backups", params={"limit": 20}).json()["items"]:
            if backup["id"] > backup_id and backup["status"] in ("pending", "running"):
                return dict(backup)
        time.sleep(0.1)
    raise AssertionError(f"no retry of backup {backup_id} was queued")


class EventLog:
    """A WebSocket client of one server process, collecting every event it is sent."""

    def __init__(self, server: LiveServer, token: str) -> None:
        self.url = server.base.replace("http://", "ws://") + f"/ws?token={token}"
        self.messages: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with connect(self.url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "channels": ["backups", "jobs"]}))
            while not self._stop.is_set():
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                except TimeoutError:
                    continue
                if message["type"] == "subscribed":
                    self.ready.set()
                self.messages.append(message)

    def __enter__(self) -> EventLog:
        self._thread.start()
        assert self.ready.wait(10), "the WebSocket never subscribed"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def of(self, type_: str) -> list[dict[str, Any]]:
        """Messages of an event type, such as "backup.completed" (sent as type and action)."""
        return [m for m in self.messages if f"{m['type']}.{m.get('action')}" == type_]


def test_a_burst_runs_each_job_once_on_the_workers_and_every_event_crosses(
    cluster: Cluster, files_server: dict[str, Any]
) -> None:
    root: Path = files_server["root"]
    sources = [source_dir(root, f"burst{i}", f"payload {i}\n" * (i + 1)) for i in range(5)]
    a, b = (server.client() for server in cluster.servers)
    with a, b, EventLog(cluster.servers[1], a.headers["Authorization"][7:]) as events:
        first = a.post(
            "/api/v1/backups",
            json={"server_id": files_server["id"], "source_path": str(sources[0])},
        ).json()
        assert wait_job(a, first["job_id"], TERMINAL)["status"] == "succeeded"

        jobs: list[int] = []
        backups: list[int] = []
        restores: dict[int, Path] = {}
        for i in range(50):
            client = (a, b)[i % 2]
            if i % 5 == 4:  # 10 restores of the first backup, each into its own directory
                target = cluster.data / "restores" / f"burst-{i}"
                r = client.post(
                    f"/api/v1/backups/{first['id']}/restore",
                    json={"target_database": str(target)},
                )
                assert r.status_code == 202, r.text
                restores[r.json()["job_id"]] = target
            else:  # 40 backups over 5 targets: one at a time per target, in parallel across
                r = client.post(
                    "/api/v1/backups",
                    json={"server_id": files_server["id"], "source_path": str(sources[i % 5])},
                )
                assert r.status_code == 202, r.text
                backups.append(r.json()["id"])
            jobs.append(r.json()["job_id"])

        finished = [wait_job(a, job_id, TERMINAL, seconds=180) for job_id in jobs]
        assert [j["status"] for j in finished] == ["succeeded"] * 50, [
            (j["id"], j["status"], j["error_message"])
            for j in finished
            if j["status"] != "succeeded"
        ]
        # The jobs left the API processes: both workers took some, no server process did.
        ran_on = {str(j["worker"]).rsplit(":", 1)[1] for j in finished}
        assert ran_on == {str(w.pid) for w in cluster.workers}
        for job_id, target in restores.items():
            assert (target / "data.txt").read_text() == "payload 0\n", job_id

        # Server B's WebSocket client saw each job start once and every backup complete,
        # though they ran in the worker processes and half were asked of server A.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            completed = {m["data"]["backup_id"] for m in events.of("backup.completed")}
            if set(backups) <= completed and len(events.of("restore.completed")) >= 10:
                break
            time.sleep(0.1)
        assert set(backups) <= completed, Counter(
            (m["type"], m.get("action")) for m in events.messages
        )
        assert len(events.of("restore.completed")) == 10
        # Each backup and each restore started exactly once.
        started = [m["data"]["backup_id"] for m in events.of("backup.started")]
        assert sorted(started) == sorted([first["id"], *backups])
        started = [m["data"]["job_id"] for m in events.of("job.started")]
        assert sorted(started) == sorted(restores)


def test_a_worker_killed_mid_backup_is_found_cleaned_up_and_its_backup_retried(
    cluster: Cluster, files_server: dict[str, Any]
) -> None:
    root: Path = files_server["root"]
    huge = huge_source(root, "huge-kill")
    with cluster.servers[0].client() as c:
        accepted = c.post(
            "/api/v1/backups", json={"server_id": files_server["id"], "source_path": str(huge)}
        ).json()
        job = wait_job(c, accepted["job_id"], {"running"})
        deadline = time.monotonic() + 30
        while c.get(f"/api/v1/jobs/{job['id']}").json()["bytes_done"] < 1_000_000:
            assert time.monotonic() < deadline, "the backup never wrote anything"
            time.sleep(0.05)
        victim = worker_of(cluster, job)
        partials = list((cluster.data / "backups").rglob("*.partial"))
        assert partials, "the backup should be writing a partial file"

        victim.kill()

        # Found by its missing heartbeat (3 beats of 0.5 s), by the other worker's sweep.
        lost = wait_job(c, job["id"], TERMINAL, seconds=30)
        assert lost["status"] == "interrupted", lost
        assert "stopped answering" in lost["error_message"]
        assert c.get(f"/api/v1/backups/{accepted['id']}").json()["status"] == "interrupted"
        assert not [p for p in partials if p.exists()], "a partial file was left"

        # Backups are safe to redo: a new attempt was queued; stop it (it would run for
        # minutes) from the API process while it runs in a worker.
        retry = retry_of(c, accepted["id"])
        retry_job = wait_job(c, retry["job_id"], {"running"} | TERMINAL)
        assert c.post(f"/api/v1/jobs/{retry_job['id']}/cancel").status_code in (200, 202)
        assert wait_job(c, retry_job["id"], TERMINAL)["status"] == "cancelled"

        # The target works again once its data is small.
        (huge / "sparse.bin").unlink()
        (huge / "data.txt").write_text("small now")
        again = c.post(
            "/api/v1/backups", json={"server_id": files_server["id"], "source_path": str(huge)}
        ).json()
        assert wait_job(c, again["job_id"], TERMINAL)["status"] == "succeeded"


def test_sigterm_lets_a_worker_hand_its_running_job_back(
    cluster: Cluster, files_server: dict[str, Any]
) -> None:
    huge = huge_source(files_server["root"], "huge-term")
    with cluster.servers[1].client() as c:
        accepted = c.post(
            "/api/v1/backups", json={"server_id": files_server["id"], "source_path": str(huge)}
        ).json()
        job = wait_job(c, accepted["job_id"], {"running"})
        worker = worker_of(cluster, job)
        started = time.monotonic()
        assert worker.stop(timeout=30) == 0
        # It waited the grace period (2 s) for the job, then handed it back and left.
        assert 1.5 < time.monotonic() - started < 20
        ended = c.get(f"/api/v1/jobs/{job['id']}").json()
        assert ended["status"] == "interrupted", ended
        assert "shutdown" in ended["error_message"]
        retry = retry_of(c, accepted["id"])
        assert c.post(f"/api/v1/jobs/{retry['job_id']}/cancel").status_code in (200, 202)
        assert wait_job(c, retry["job_id"], TERMINAL)["status"] == "cancelled"


def test_a_server_killed_mid_request_leaves_no_job_behind(
    cluster: Cluster, files_server: dict[str, Any]
) -> None:
    source = source_dir(files_server["root"], "during-kill", "kept")
    victim = cluster.servers[0]
    with cluster.servers[1].client() as c:
        before = c.get("/api/v1/jobs", params={"limit": 1}).json()["items"][0]["id"]
        token = c.headers["Authorization"]

        def post() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(
                    f"{victim.base}/api/v1/backups",
                    json={"server_id": files_server["id"], "source_path": str(source)},
                    headers={"Authorization": token},
                    timeout=10,
                )

        senders = [threading.Thread(target=post) for _ in range(20)]
        for sender in senders:
            sender.start()
        time.sleep(0.15)
        assert victim.proc is not None
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        for sender in senders:
            sender.join()

        # Whatever the dead process committed is carried out by the workers: a job whose
        # hand-over to the queue died with it is handed over again by a sweep.
        made = [j for j in c.get("/api/v1/jobs", params={"limit": 50}).json()["items"]]
        made = [j for j in made if j["id"] > before]
        for job in made:
            assert wait_job(c, job["id"], TERMINAL, seconds=60)["status"] == "succeeded", job

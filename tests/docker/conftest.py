"""Real Docker containers on this host, each running its own PostgreSQL server.

No registry is reachable here, so the image is built from nothing: ``docker import`` of a
tiny root file system (the merged-/usr symlinks, ``/etc/passwd``, an empty data dir),
run with this host's ``/usr`` mounted read-only, so the container has the very same
PostgreSQL and client binaries without a download. Each container runs with
``--network none``: its database is reachable only from inside, so a backup that works
ran its tools in the container. ``scripts/ensure-system.sh`` installs Debian's
``docker.io`` and starts the engine (``vfs`` storage, no iptables) when it is not up.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.ssh.conftest import ssh_client_key, sshd  # noqa: F401 (fixtures for this package)

IMAGE = "opscenter-test-rootfs:2"
PG_BIN = "/usr/lib/postgresql/15/bin"
PG_UID = 70


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def _rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(
            name: str,
            *,
            kind: bytes = tarfile.DIRTYPE,
            mode: int = 0o755,
            data: bytes | None = None,
            **kw: object,
        ) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            for key, value in kw.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for link in ("bin", "lib", "lib64", "sbin"):
            add(link, kind=tarfile.SYMTYPE, linkname=f"usr/{link}", mode=0o777)
        for d in ("usr", "etc", "run", "var", "var/lib", "root", "proc", "sys", "dev"):
            add(d)
        add("tmp", mode=0o1777)
        add("var/lib/pg", mode=0o700, uid=PG_UID, gid=PG_UID)
        add("srv", mode=0o755, uid=PG_UID, gid=PG_UID)
        passwd = (
            f"root:x:0:0:root:/root:/bin/sh\npostgres:x:{PG_UID}:{PG_UID}::/var/lib/pg:/bin/sh\n"
        )
        group = f"root:x:0:\npostgres:x:{PG_UID}:\n"
        for name, text in (("etc/passwd", passwd), ("etc/group", group)):
            add(name, kind=tarfile.REGTYPE, mode=0o644, data=text.encode())
    return buf.getvalue()


@pytest.fixture(scope="session")
def docker_image() -> str:
    info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    if info.returncode != 0:
        pytest.fail(
            "no Docker engine answers (scripts/ensure-system.sh installs docker.io and "
            f"starts dockerd): {info.stderr.strip()[:300]}"
        )
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        subprocess.run(
            ["docker", "import", "-", IMAGE], input=_rootfs(), capture_output=True, check=True
        )
    return IMAGE


@dataclass
class PgContainer:
    name: str

    def psql(self, sql: str, db: str = "postgres", *, check: bool = True) -> str:
        deadline = time.monotonic() + 30
        while True:
            res = docker(
                "exec", self.name, f"{PG_BIN}/psql", "-h", "127.0.0.1", "-U", "postgres",
                "-d", db, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql, check=False,
            )  # fmt: skip
            # Seen twice in full runs, never alone: the server in recovery after one of its
            # backends ended abnormally. Wait it out, and keep its log in the failure.
            if "recovery mode" not in res.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if check and res.returncode != 0:
            logs = docker("logs", "--tail", "30", self.name, check=False)
            raise AssertionError(f"psql failed: {res.stderr}\nserver log:\n{logs.stderr}")
        return res.stdout.strip()

    def sh(self, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, "/bin/sh", "-c", script, check=check)


def start_pg_container(image: str) -> PgContainer:
    name = f"oc-test-pg-{uuid.uuid4().hex[:10]}"
    boot = (
        f"{PG_BIN}/initdb -D /var/lib/pg -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 "
        f">/tmp/initdb.log 2>&1 && exec {PG_BIN}/postgres -D /var/lib/pg -k /tmp "
        "-c listen_addresses=127.0.0.1 -c port=5432 -c fsync=off"
    )
    docker(
        "run", "-d", "--name", name, "--network", "none", "--user", "postgres",
        # Docker's default 64 MB /dev/shm can end a PostgreSQL backend with SIGBUS, which
        # puts the whole server into recovery (seen once under load).
        "--shm-size", "256m",
        "-v", "/usr:/usr:ro", image, "/bin/sh", "-c", boot,
    )  # fmt: skip
    container = PgContainer(name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = docker("exec", name, f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", check=False)
        if ready.returncode == 0:
            return container
        time.sleep(0.3)
    logs = docker("logs", name, check=False)
    docker("rm", "-f", name, check=False)
    said = logs.stdout[-500:] + logs.stderr[-500:]
    raise RuntimeError(f"PostgreSQL in {name} did not start: {said}")


@pytest.fixture(scope="session")
def pg_container(docker_image: str) -> Iterator[PgContainer]:
    """One container for the session (each test uses its own databases in it)."""
    container = start_pg_container(docker_image)
    yield container
    docker("rm", "-f", container.name, check=False)


@pytest.fixture
def make_pg_container(docker_image: str) -> Iterator[Callable[[], PgContainer]]:
    made: list[PgContainer] = []

    def make() -> PgContainer:
        made.append(start_pg_container(docker_image))
        return made[-1]

    yield make
    for c in made:
        docker("rm", "-f", c.name, check=False)


@dataclass
class MariaDbContainer:
    name: str

    def sql(self, sql: str, db: str | None = None) -> str:
        res = docker(
            "exec", self.name, "mariadb", "-h127.0.0.1", "-uroot", "--batch",
            "--skip-column-names", "-e", sql, *([db] if db else []),
        )  # fmt: skip
        return res.stdout.strip()


@pytest.fixture(scope="session")
def mariadb_container(docker_image: str) -> Iterator[MariaDbContainer]:
    """A MariaDB server of its own (this host's binaries), root without a password."""
    name = f"oc-test-my-{uuid.uuid4().hex[:10]}"
    boot = (
        "mariadb-install-db --no-defaults --datadir=/tmp/my --user=root "
        "--auth-root-authentication-method=normal --skip-test-db >/tmp/install.log 2>&1 && "
        "exec mariadbd --no-defaults --datadir=/tmp/my --user=root --socket=/tmp/my.sock "
        "--port=3306 --bind-address=127.0.0.1 --skip-log-bin"
    )
    docker(
        "run", "-d", "--name", name, "--network", "none", "-v", "/usr:/usr:ro",
        docker_image, "/bin/sh", "-c", boot,
    )  # fmt: skip
    container = MariaDbContainer(name)
    deadline = time.monotonic() + 90
    while True:
        ping = docker("exec", name, "mariadb-admin", "-h127.0.0.1", "-uroot", "ping", check=False)
        if ping.returncode == 0:
            break
        if time.monotonic() > deadline:
            logs = docker("logs", name, check=False)
            docker("rm", "-f", name, check=False)
            raise RuntimeError(f"MariaDB in {name} did not start: {logs.stderr[-500:]}")
        time.sleep(0.3)
    yield container
    docker("rm", "-f", name, check=False)

"""A real OpenSSH sshd on 127.0.0.1 (own config, host key and client key in a temp dir).

Needs the Debian package ``openssh-server`` (``/usr/sbin/sshd``); the tests are skipped
when it is missing. Logs in as the current user (root here) with a generated key.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:  # until the package is installed in the venv
    import opscenter  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from opscenter.remote.ssh import SshConfig

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _require_openssh() -> None:
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:  # pragma: no cover
        pytest.skip("openssh-server is not installed (apt-get install -y openssh-server)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519") -> None:
    for p in (path, path.with_name(path.name + ".pub")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@dataclass
class SshServer:
    root: Path
    client_key: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key_path(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def host_key_line(self) -> str:
        text = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        return " ".join(text[:2])

    @property
    def host_fingerprint(self) -> str:
        out = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", str(self.host_key_path) + ".pub"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()[1]

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.host_key_path.exists():
            keygen(self.host_key_path)
        auth = self.root / "authorized_keys"
        auth.write_text(self.client_key.with_name(self.client_key.name + ".pub").read_text())
        auth.chmod(0o600)
        cfg = self.root / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {auth}",
                    "StrictModes no",
                    "PermitRootLogin yes",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "UsePAM no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    "MaxSessions 64",
                    "MaxStartups 100",
                    "PrintMotd no",
                    "",
                ]
            )
        )
        return cfg

    def start(self) -> None:
        cfg = self.write_config()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited: {(self.root / 'sshd.log').read_text(errors='replace')}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s,
            ):
                if s.recv(4).startswith(b"SSH-"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        # Every per-connection process the listener forked, then the listener.
        self.drop_connections()
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def regenerate_host_key(self) -> None:
        keygen(self.host_key_path)

    def session_pids(self) -> list[int]:
        """sshd processes forked for connections (children of the listener)."""
        if self.proc is None:
            return []
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == self.proc.pid:
                out.append(int(entry))
        return out

    def drop_connections(self) -> None:
        """Kill the per-connection sshd processes: clients see the connection drop."""
        for pid in self.session_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def config(self, **overrides: Any) -> SshConfig:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "username": getpass.getuser(),
            "private_key": self.client_key.read_text(),
            "connect_timeout": 10.0,
        }
        values.update(overrides)
        return SshConfig(**values)


@pytest.fixture(scope="session")
def ssh_client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_openssh()
    path = tmp_path_factory.mktemp("ssh-client") / "id_ed25519"
    keygen(path)
    return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, ssh_client_key: Path) -> Iterator[SshServer]:
    """One sshd for the whole session."""
    server = SshServer(tmp_path_factory.mktemp("sshd"), ssh_client_key)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_sshd(
    tmp_path_factory: pytest.TempPathFactory, ssh_client_key: Path
) -> Iterator[Callable[[], SshServer]]:
    """Factory for a private sshd (to restart it or change its host key)."""
    servers: list[SshServer] = []

    def make() -> SshServer:
        server = SshServer(tmp_path_factory.mktemp("sshd-own"), ssh_client_key)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()

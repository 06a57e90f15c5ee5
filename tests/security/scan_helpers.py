"""A local TLS server whose certificate can be swapped, certificates made with
`cryptography`, and starting a scan and waiting for it."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Api

SCAN = "/api/v1/security/scan"
SCANS = "/api/v1/security/scans"
POLICIES = "/api/v1/security/policies"
ALLOW = "/api/v1/security/surface-allowlist"


def self_signed(directory: Path, days: int) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 valid from yesterday for `days` days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scan-test.local")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"cert-{days}.pem", directory / f"key-{days}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[int]:
    """A TLS listener on 127.0.0.1 that completes the handshake and hangs up; its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def scanned(api: Api, client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """Start a scan, wait for its job, answer the scan."""
    r = await client.post(SCAN, json=body)
    assert r.status_code == 202, r.text
    accepted = r.json()
    await api.app.state.ctx.runner.wait(accepted["job_id"], limit_seconds=120)
    scan = await client.get(accepted["status_url"])
    assert scan.status_code == 200, scan.text
    out: dict[str, Any] = scan.json()
    return out


async def policy(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    items = (await client.get(POLICIES)).json()["items"]
    found: dict[str, Any] = next(p for p in items if p["key"] == key)
    return found

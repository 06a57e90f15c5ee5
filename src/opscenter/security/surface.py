"""Surface checks: what an asset shows on the network, probed only at addresses an admin
allows. TLS on the declared ports (certificate expiry, protocol, chain) and a bounded
connect scan of the ports against the declared list. Runs outside any transaction."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from opscenter.security import policies as pol
from opscenter.security.posture import Issue
from opscenter.security.scan_schemas import Check

CONCURRENCY = 32
TLS_TIMEOUT = 5.0
# OpenSSL's verify codes for a self-signed leaf and for a self-signed root in the chain.
SELF_SIGNED_CODES = (18, 19)
TLS_RANK = {"SSLv3": 0, "TLSv1": 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4}


@dataclass(frozen=True)
class Target:
    asset_id: int
    address: str
    declared: tuple[int, ...]


@dataclass
class Tls:
    not_after: datetime
    version: str
    subject: str
    self_signed: bool
    verify_error: str | None  # None: the chain verifies against the system store


@dataclass
class Observation:
    target: Target
    ip: str
    open_ports: set[int] = field(default_factory=set)
    tls: dict[int, Tls] = field(default_factory=dict)


def allowed(ip: str, host: str, allow: Iterable[str]) -> bool:
    """Whether the allow-list names this host, or a range this address is in."""
    addr = ipaddress.ip_address(ip)
    for entry in allow:
        if "/" in entry:
            if addr in ipaddress.ip_network(entry):
                return True
        elif entry == host.lower():
            return True
    return False


async def resolve(host: str) -> str | None:
    """The first address of `host` (an address stays itself); None when it has none."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    return str(infos[0][4][0]) if infos else None


async def _is_open(ip: str, port: int, wait: float, gate: asyncio.Semaphore) -> bool:
    async with gate:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), wait)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


async def _handshake(ip: str, port: int, host: str, context: ssl.SSLContext) -> ssl.SSLObject:
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(ip, port, ssl=context, server_hostname=host or None),
        TLS_TIMEOUT,
    )
    try:
        obj = writer.get_extra_info("ssl_object")
        assert isinstance(obj, ssl.SSLObject)
        return obj
    finally:
        writer.close()


async def _tls(ip: str, port: int, host: str) -> Tls | None:
    """The certificate and protocol on `port`, and whether the chain verifies; None when
    the port does not speak TLS."""
    reading = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    reading.check_hostname, reading.verify_mode = False, ssl.CERT_NONE
    try:
        obj = await _handshake(ip, port, host, reading)
        der = obj.getpeercert(binary_form=True)
        version = obj.version() or ""
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    verifying = ssl.create_default_context()
    verifying.check_hostname = False  # the chain's trust, not the name, is checked here
    error: str | None = None
    code = 0
    try:
        await _handshake(ip, port, host, verifying)
    except ssl.SSLCertVerificationError as err:
        error, code = err.verify_message or str(err), err.verify_code or 0
    except (OSError, TimeoutError, ssl.SSLError) as err:
        error = str(err) or type(err).__name__
    return Tls(
        not_after=cert.not_valid_after_utc,
        version=version,
        subject=cert.subject.rfc4514_string(),
        self_signed=cert.issuer == cert.subject or code in SELF_SIGNED_CODES,
        verify_error=error,
    )


async def probe(target: Target, ip: str, ports: set[int], wait: float) -> Observation:
    """Which of `ports` (declared ones always included) are open, and TLS on the open
    declared ones; at most CONCURRENCY connections at once."""
    seen = Observation(target, ip)
    gate = asyncio.Semaphore(CONCURRENCY)
    wanted = sorted(ports | set(target.declared))
    states = await asyncio.gather(*(_is_open(ip, port, wait, gate) for port in wanted))
    seen.open_ports = {port for port, up in zip(wanted, states, strict=True) if up}
    host = "" if _is_ip(target.address) else target.address
    for port in sorted(seen.open_ports & set(target.declared)):
        tls = await _tls(ip, port, host)
        if tls is not None:
            seen.tls[port] = tls
    return seen


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def evaluate(check: Check, params: object, seen: Observation, now: datetime) -> list[Issue]:
    """The subjects of one probed target failing one surface policy."""
    where = seen.target.address
    if check == Check.OPEN_PORTS:
        assert isinstance(params, pol.OpenPorts)
        extra = (seen.open_ports & set(params.ports)) - set(seen.target.declared)
        return [
            Issue(f"{where}:{port}", f"Port {port} on {where} is open but not declared")
            for port in sorted(extra)
        ]
    issues = []
    for port, tls in sorted(seen.tls.items()):
        subject = f"{where}:{port}"
        if check == Check.TLS_EXPIRY:
            assert isinstance(params, pol.TlsExpiry)
            left = (tls.not_after - now).total_seconds()
            days = math.ceil(left / 86400)  # 4 days 23 h left: "expires in 5 days"
            if left <= 0:
                issues.append(Issue(subject, f"The certificate on {subject} expired", "critical"))
            elif days <= params.critical_days:
                issues.append(
                    Issue(subject, f"The certificate on {subject} expires in {days} days", "high")
                )
            elif days <= params.warn_days:
                issues.append(
                    Issue(subject, f"The certificate on {subject} expires in {days} days")
                )
        elif check == Check.TLS_PROTOCOL:
            assert isinstance(params, pol.TlsProtocol)
            if TLS_RANK.get(tls.version, 0) < TLS_RANK[params.min_version]:
                issues.append(
                    Issue(subject, f"{subject} negotiates {tls.version or 'an unknown protocol'} "
                          f"(policy: {params.min_version} or later)")
                )  # fmt: skip
        elif check == Check.TLS_SELF_SIGNED and tls.self_signed:
            issues.append(Issue(subject, f"The certificate on {subject} is self-signed"))
        elif check == Check.TLS_CHAIN and tls.verify_error and not tls.self_signed:
            issues.append(
                Issue(subject, f"The certificate chain on {subject} does not verify: "
                      f"{tls.verify_error}")
            )  # fmt: skip
    return issues

"""Outbound address policy (SSRF guard): user-supplied URLs and hosts must not reach
loopback, private, link-local, metadata or other internal addresses, in any spelling,
unless an admin allow-listed them (OPSCENTER_OUTBOUND_ALLOWLIST)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from opscenter.core.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


class OutboundPolicy:
    def __init__(self, allowlist: Iterable[str] = ()) -> None:
        self.networks: list[IPNetwork] = []
        self.hosts: set[str] = set()
        for entry in allowlist:
            entry = _canonical(entry.strip())
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry)

    def _allowed(self, host: str, address: IPAddress) -> bool:
        return _canonical(host) in self.hosts or any(address in net for net in self.networks)

    def check_name(self, host: str) -> None:
        """Refuse loopback names (`localhost`, `*.localhost`, with or without the final
        dot) without asking DNS: they are loopback whether or not they resolve here."""
        name = _canonical(host)
        loopback = name == "localhost" or name.endswith(".localhost")
        if loopback and not self._allowed(name, _LOOPBACK):
            raise InvalidInput(
                f"{host} names an internal address (loopback); outgoing connections there "
                "are refused unless an admin adds it to OPSCENTER_OUTBOUND_ALLOWLIST"
            )

    def check_host(self, host: str, port: int | None = None) -> list[str]:
        """Resolve `host` and refuse it if any address is internal and not allow-listed.
        Returns the resolved addresses (connect to these: pin, don't resolve again)."""
        if not host:
            raise InvalidInput("A host is required")
        self.check_name(host)
        try:
            infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise InvalidInput(f"Cannot resolve {host!r}: check the name") from None
        addresses = sorted({str(info[4][0]) for info in infos})
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if _internal(address) and not self._allowed(host, address):
                raise InvalidInput(
                    f"{host} resolves to the internal address {address}; outgoing connections "
                    "there are refused unless an admin adds it to OPSCENTER_OUTBOUND_ALLOWLIST"
                )
        return addresses

    def check_url(self, url: str, schemes: tuple[str, ...] = ("https", "http")) -> str:
        parts = urlsplit(url)
        if parts.scheme not in schemes:
            raise InvalidInput(f"URL scheme must be one of {', '.join(schemes)}")
        if parts.username or parts.password:
            raise InvalidInput("Put credentials in the credential fields, not in the URL")
        self.check_host(parts.hostname or "", parts.port)
        return url


def _canonical(host: str) -> str:
    return host.lower().rstrip(".")


def _internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _internal(address.ipv4_mapped)
        if address in _NAT64:
            return _internal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return not address.is_global or address.is_multicast

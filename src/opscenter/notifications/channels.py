"""The channel adapter: a channel's typed configuration becomes an Apprise plugin aimed
exactly where the configuration says, and nothing is sent before the SSRF guard approved
every address the plugin will connect to.

Apprise hard-codes the public host of some services (Slack, Discord, Telegram). Each of
those plugins keeps its base URL in a class attribute (`webhook_url`, `notify_url`); we set
it on the instance from the URL the admin gave, so the request goes where the channel's
URL points (the real service, a Slack-compatible receiver, a self-hosted Bot API server)
and that is the address the guard checked. Redirects are never followed."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import apprise

from opscenter.core.errors import InvalidInput
from opscenter.core.outbound import OutboundPolicy

SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "slack": ("webhook_url",),
    "teams": ("webhook_url",),
    "discord": ("webhook_url",),
    "telegram": ("bot_token",),
    "ntfy": ("token",),
    "webhook": ("url",),
    "email": ("password",),
}
CHANNEL_TYPES = tuple(SECRET_FIELDS)
_APPRISE_LEVEL = {
    "info": apprise.NotifyType.INFO,
    "warning": apprise.NotifyType.WARNING,
    "error": apprise.NotifyType.FAILURE,
    "critical": apprise.NotifyType.FAILURE,
}
# Apprise's own log lines can carry a webhook's tokens; the dispatcher logs a scrubbed line.
_apprise_log = logging.getLogger("apprise")
_apprise_log.propagate = False


class OutboundBlocked(InvalidInput):
    code = "OUTBOUND_BLOCKED"


class DeliveryFailed(Exception):
    """The service refused or could not be reached; the message holds no secret."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int | None


def endpoints(kind: str, config: dict[str, Any]) -> list[Endpoint]:
    """Every host:port the plugin of this channel will connect to."""
    if kind == "email":
        return [Endpoint(str(config["smtp_host"]), int(config["smtp_port"]))]
    url = {
        "telegram": str(config.get("api_url") or ""),
        "ntfy": str(config.get("url") or ""),
    }.get(kind, str(config.get("webhook_url") or config.get("url") or ""))
    parts = urlsplit(url)
    return [Endpoint(parts.hostname or "", parts.port)]


def target_host(kind: str, config: dict[str, Any]) -> str:
    return ", ".join(sorted({e.host for e in endpoints(kind, config)}))


def check_endpoints(policy: OutboundPolicy, kind: str, config: dict[str, Any]) -> None:
    """Blocking (it resolves names): run it in a thread. Refuses internal addresses."""
    for endpoint in endpoints(kind, config):
        try:
            policy.check_host(endpoint.host, endpoint.port)
        except InvalidInput as err:
            raise OutboundBlocked(err.detail) from None


def precheck_endpoints(policy: OutboundPolicy, kind: str, config: dict[str, Any]) -> None:
    """At save time: refuse internal addresses, but accept a name that does not resolve
    right now (DNS may be down); the check before every send refuses it if it still fails."""
    for endpoint in endpoints(kind, config):
        try:
            policy.check_name(endpoint.host)
            socket.getaddrinfo(endpoint.host, endpoint.port or 0, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            continue
        except InvalidInput as err:
            raise OutboundBlocked(err.detail) from None
        try:
            policy.check_host(endpoint.host, endpoint.port)
        except InvalidInput as err:
            raise OutboundBlocked(err.detail) from None


def _split_tokens(url: str, count: int) -> tuple[str, list[str]]:
    """The base URL (scheme, host, leading path) and the last `count` path segments."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < count:
        raise InvalidInput(f"the webhook URL must end with {count} path segments")
    prefix = "/".join(segments[:-count])
    base = f"{parts.scheme}://{parts.netloc}" + (f"/{prefix}" if prefix else "")
    return base, segments[-count:]


def _plugin(url: str, asset: apprise.AppriseAsset) -> Any:
    plugin = apprise.Apprise.instantiate(url, asset=asset)
    if plugin is None:
        raise InvalidInput("the channel configuration is not valid for this service")
    return plugin


def build(kind: str, config: dict[str, Any]) -> Any:
    """An Apprise plugin instance for this channel (raises InvalidInput if malformed)."""
    asset = apprise.AppriseAsset(http_redirects=False, secure_logging=True)
    q = quote
    if kind == "slack":
        base, (a, b, c) = _split_tokens(config["webhook_url"], 3)
        target = f"/{q(config['channel'], safe='')}" if config.get("channel") else ""
        plugin = _plugin(f"slack://{q(a)}/{q(b)}/{q(c)}{target}", asset)
        plugin.webhook_url = base
    elif kind == "discord":
        base, (webhook_id, token) = _split_tokens(config["webhook_url"], 2)
        plugin = _plugin(f"discord://{q(webhook_id)}/{q(token)}", asset)
        plugin.notify_url = base
    elif kind == "teams":
        plugin = _plugin(config["webhook_url"], asset)  # Apprise parses Power Automate URLs
    elif kind == "telegram":
        plugin = _plugin(
            f"tgram://{q(config['bot_token'], safe=':')}/{q(config['chat_id'])}", asset
        )
        plugin.notify_url = str(config["api_url"]).rstrip("/") + "/bot"
    elif kind == "ntfy":
        parts = urlsplit(config["url"])
        scheme = "ntfys" if parts.scheme == "https" else "ntfy"
        auth = f"{q(config['token'], safe='')}@" if config.get("token") else ""
        plugin = _plugin(f"{scheme}://{auth}{parts.netloc}{parts.path}?mode=private", asset)
    elif kind == "webhook":
        parts = urlsplit(config["url"])
        scheme = "jsons" if parts.scheme == "https" else "json"
        # Apprise passes `-name=value` through as the webhook URL's own query parameters.
        query = urlencode([(f"-{k}", v) for k, v in _query_pairs(parts.query)])
        suffix = f"?{query}" if query else ""
        plugin = _plugin(f"{scheme}://{parts.netloc}{parts.path or '/'}{suffix}", asset)
    elif kind == "email":
        plugin = _plugin(_mailto(config), asset)
    else:
        raise InvalidInput(f"unknown channel type {kind!r}")
    return plugin


def _query_pairs(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _mailto(config: dict[str, Any]) -> str:
    security = config.get("security", "starttls")
    scheme = "mailto" if security == "none" else "mailtos"
    mode = {"none": "insecure", "starttls": "starttls", "ssl": "ssl"}[security]
    login = ""
    if config.get("username"):
        login = quote(config["username"], safe="")
        if config.get("password"):
            login += ":" + quote(config["password"], safe="")
        login += "@"
    params = {
        "smtp": config["smtp_host"],
        "mode": mode,
        "from": config["from_address"],
        "to": ",".join(config["to"]),
    }
    host = config["smtp_host"]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{login}{host}:{int(config['smtp_port'])}?{urlencode(params)}"


class _ThreadCapture(logging.Handler):
    """Apprise's warnings of one send (the reason it failed), from this thread only."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


def scrub(text: str, config: dict[str, Any], kind: str) -> str:
    """Remove every secret of the channel (and its URL-quoted form) from a message."""
    for field in SECRET_FIELDS.get(kind, ()):
        secret = config.get(field)
        if not secret:
            continue
        secret = str(secret)
        pieces = {secret, quote(secret, safe=""), quote(secret)}
        if "://" in secret:  # a secret URL: its path and query carry the tokens
            parts = urlsplit(secret)
            pieces.update(s for s in parts.path.split("/") if len(s) >= 6)
            pieces.add(parts.query)
        for piece in sorted(filter(None, pieces), key=len, reverse=True):
            text = text.replace(piece, "***")
    return text


def deliver(kind: str, config: dict[str, Any], title: str, body: str, level: str) -> None:
    """Blocking send (run it in a thread). Raises DeliveryFailed with a scrubbed reason."""
    plugin = build(kind, config)
    capture = _ThreadCapture()
    _apprise_log.addHandler(capture)
    try:
        ok = plugin.notify(
            body=body or title, title=title, notify_type=_APPRISE_LEVEL.get(level, "info")
        )
    except Exception as err:  # a plugin bug must not take the dispatcher down
        ok = False
        capture.lines.append(f"{type(err).__name__}: {err}")
    finally:
        _apprise_log.removeHandler(capture)
    if not ok:
        reason = "; ".join(capture.lines[-3:]) or "the service did not accept the notification"
        raise DeliveryFailed(scrub(reason, config, kind)[:1900])

"""Structured JSON logs with secrets redacted before anything is written."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|private[_-]?key|"
    r"ssh[_-]?key|hash",
    re.IGNORECASE,
)
# Bearer tokens, JWTs, our key prefixes and password= pairs inside free text.
SECRET_VALUES = re.compile(
    r"(Bearer\s+)[A-Za-z0-9._~+/=-]+|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|"
    r"\b(ock|ocr)_[A-Za-z0-9_-]{10,}|(password|passwd|pwd)=\S+",
    re.IGNORECASE,
)
REDACTED = "[REDACTED]"


def redact(value: Any, key: str = "") -> Any:
    """Redact by key name and by recognisable secret shapes in strings, recursively."""
    if key and SECRET_KEYS.search(key) and value not in (None, "", [], {}):
        return REDACTED if not isinstance(value, bool) else value
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return SECRET_VALUES.sub(REDACTED, value)
    return value


def _redact_processor(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return {
        k: (v if k in {"event", "level", "timestamp"} else redact(v, k))
        for k, v in event_dict.items()
    }


_plain_records = logging.getLogRecordFactory()


def _redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Libraries log through the standard module (uvicorn names each WebSocket's URL, and
    `?token=` carries a JWT there): their lines are redacted as they are made."""
    record = _plain_records(*args, **kwargs)
    message = record.getMessage()
    cleaned = SECRET_VALUES.sub(REDACTED, message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    return record


def configure_logging(level: str = "INFO") -> None:
    logging.setLogRecordFactory(_redacted_record)
    logging.basicConfig(format="%(message)s", level=level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_processor,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)

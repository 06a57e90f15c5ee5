from datetime import UTC, datetime


def utcnow() -> datetime:
    """Aware UTC now; every timestamp we store and emit is UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; treat them as the UTC they were stored as."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def isoformat_z(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")

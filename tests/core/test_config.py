"""Settings: weak secrets refused in production, origins parsed, database URLs normalised."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opscenter.config import Settings

STRONG = secrets.token_urlsafe(32)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes counts, whatever the shell running the tests exports."""
    for name in ("ENVIRONMENT", "JWT_SECRET", "DATABASE_URL", "ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"OPSCENTER_{name}", raising=False)
    for name in ("OPSCENTER_ADMIN_PASSWORD", "OPSCENTER_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "values",
    [
        {"JWT_SECRET": "changeme"},
        {"JWT_SECRET": "CHANGEME"},
        {"JWT_SECRET": "your-secret-key-here"},
        {"JWT_SECRET": STRONG[:31]},  # too short, however random
        {"JWT_SECRET": ""},
        {"OPSCENTER_ADMIN_PASSWORD": "admin123"},
        {"OPSCENTER_ADMIN_PASSWORD": "changeme"},
    ],
)
def test_production_refuses_weak_secrets(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as refused:
        settings(OPSCENTER_ENVIRONMENT="production", **values)
    assert "weak" in str(refused.value)


def test_a_refused_secret_is_not_echoed_in_the_error() -> None:
    almost = secrets.token_hex(15)  # 30 random characters: refused as too short
    with pytest.raises(ValidationError) as refused:
        settings(OPSCENTER_ENVIRONMENT="production", JWT_SECRET=almost)
    assert almost[-12:] not in str(refused.value)


def test_production_accepts_strong_or_generated_secrets() -> None:
    strong = settings(ENVIRONMENT="production", JWT_SECRET=STRONG, OPSCENTER_ADMIN_PASSWORD=STRONG)
    assert strong.environment == "production" and strong.jwt_secret == STRONG
    generated = settings(OPSCENTER_ENVIRONMENT="production")  # keys made in the data dir
    assert generated.jwt_secret is None and generated.admin_password is None


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_accepts_weak_secrets(environment: str) -> None:
    s = settings(
        OPSCENTER_ENVIRONMENT=environment,
        JWT_SECRET="changeme",
        OPSCENTER_ADMIN_PASSWORD="admin123",
    )
    assert s.jwt_secret == "changeme" and s.admin_password == "admin123"
    assert settings().environment == "development"


def test_environment_variables_are_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCENTER_ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", "secret")
    with pytest.raises(ValidationError):
        settings()
    monkeypatch.setenv("JWT_SECRET", STRONG)
    assert settings().jwt_secret == STRONG


def test_allowed_origins_from_a_comma_string(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(ALLOWED_ORIGINS=" https://a.example.com,https://b.example.com:8443 ,, ")
    assert s.allowed_origins == ["https://a.example.com", "https://b.example.com:8443"]
    assert settings(ALLOWED_ORIGINS=["https://c.example.com"]).allowed_origins == [
        "https://c.example.com"
    ]
    assert settings().allowed_origins == []
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://ui.example.com, http://localhost:3000")
    assert settings().allowed_origins == ["https://ui.example.com", "http://localhost:3000"]


@pytest.mark.parametrize(
    ("given", "effective"),
    [
        ("postgresql://u:p@db:5432/ops", "postgresql+asyncpg://u:p@db:5432/ops"),
        ("postgres://u@db/ops", "postgresql+asyncpg://u@db/ops"),
        ("postgresql+asyncpg://u@db/ops", "postgresql+asyncpg://u@db/ops"),
        ("sqlite:////srv/ops.db", "sqlite+aiosqlite:////srv/ops.db"),
        ("sqlite+aiosqlite:////srv/ops.db", "sqlite+aiosqlite:////srv/ops.db"),
    ],
)
def test_database_url_gets_the_async_driver(given: str, effective: str) -> None:
    assert settings(DATABASE_URL=given).effective_database_url == effective
    assert settings(OPSCENTER_DATABASE_URL=given).effective_database_url == effective


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    s = settings(OPSCENTER_DATA_DIR=tmp_path / "d")
    assert (
        s.effective_database_url == f"sqlite+aiosqlite:///{(tmp_path / 'd').resolve()}/opscenter.db"
    )
    assert s.keys_dir == tmp_path / "d" / "keys"

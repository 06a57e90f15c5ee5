"""The pure rules: how a run's outcome moves a backup's verification_status, how row
counts are compared, and what retention keeps around a corrupt backup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opscenter.retention.rules import Item, Rules, decide
from opscenter.streaming.manifest import RowCounts
from opscenter.verify.execute import compare_counts
from opscenter.verify.service import outcome_of, status_after


@pytest.mark.parametrize(
    ("current", "test_type", "outcome", "expected"),
    [
        ("unverified", "checksum", "passed", "checksum_ok"),
        ("unverified", "deep", "passed", "deep_ok"),
        ("deep_ok", "restore", "passed", "restore_verified"),
        ("restore_verified", "checksum", "passed", "restore_verified"),
        ("restore_verified", "deep", "passed", "restore_verified"),
        ("deep_ok", "checksum", "passed", "deep_ok"),
        ("restore_verified", "checksum", "corrupt", "corrupt"),
        ("deep_ok", "restore", "failed", "deep_ok"),
        ("unverified", "deep", "cancelled", "unverified"),
        ("corrupt", "checksum", "passed", "corrupt"),
        ("corrupt", "deep", "passed", "deep_ok"),
        ("corrupt", "restore", "interrupted", "corrupt"),
    ],
)
def test_status_after(current: str, test_type: str, outcome: str, expected: str) -> None:
    assert status_after(current, test_type, outcome) == expected


def test_outcome_of_tells_damage_from_a_check_that_could_not_run() -> None:
    assert outcome_of("succeeded", None) == "passed"
    for code in ("checksum_mismatch", "decrypt_failed", "verify_failed", "table_missing"):
        assert outcome_of("failed", code) == "corrupt"
    for code in ("unreachable", "auth_failed", "storage_failed", "restore_failed", "not_found"):
        assert outcome_of("failed", code) == "failed"
    assert outcome_of("cancelled", "cancelled") == "cancelled"
    assert outcome_of("interrupted", "interrupted") == "interrupted"


def test_compare_counts() -> None:
    expected = RowCounts({"a": 3, "b": 5, "big": 10_000, "gone": 1}, estimated=("big",))
    rows = compare_counts(expected, {"a": 3, "b": 4, "big": 9_990, "new": 2}, sample=None, seed=1)
    assert {r["table"]: r["status"] for r in rows} == {
        "a": "ok",
        "b": "differs",
        "big": "estimated",
        "gone": "missing",
        "new": "extra",
    }
    many = RowCounts({f"t{i}": i for i in range(30)})
    sample = compare_counts(many, {f"t{i}": i for i in range(30)}, sample=10, seed=7)
    assert len(sample) == 10 and all(r["status"] == "ok" for r in sample)
    assert sample == compare_counts(many, {f"t{i}": i for i in range(30)}, sample=10, seed=7)


def test_retention_keeps_the_last_good_backup_when_the_newest_is_corrupt() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    day = timedelta(days=1)
    items = [
        Item(1, now - 3 * day, "completed"),
        Item(2, now - 2 * day, "completed"),
        Item(3, now - day, "completed", corrupt=True),
    ]
    decision = decide(items, Rules(keep_last_n=1), now)
    assert 3 in decision.keep and 2 in decision.keep and 1 in decision.delete
    assert "safety floor: newest backup not found corrupt" in decision.keep[2]

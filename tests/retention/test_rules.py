"""The retention decision against a brute-force reference model (hypothesis), and its
safety floor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from opscenter.retention.rules import Item, Rules, decide

ZONES = [UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]
STATUSES = ["completed"] * 6 + ["pending", "running", "failed", "cancelled", "deleting"]
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def order(item: Item) -> tuple[datetime, int]:
    return (item.created_at, item.id)


def period_keys(moment: datetime, tz: tzinfo) -> dict[str, tuple[int, ...]]:
    local = moment.astimezone(tz)
    iso = local.isocalendar()
    return {
        "keep_daily": (local.year, local.month, local.day),
        "keep_weekly": (iso[0], iso[1]),
        "keep_monthly": (local.year, local.month),
        "keep_yearly": (local.year,),
    }


def reference(items: list[Item], rules: Rules, now: datetime, tz: tzinfo) -> set[int]:
    """The ids to delete, straight from the definitions, one backup at a time."""
    completed = [i for i in items if i.status == "completed"]

    def rank(b: Item) -> int:  # 0 = newest
        return sum(1 for c in completed if order(c) > order(b))

    def kept(b: Item) -> bool:
        if rules.empty or rank(b) < rules.min_keep or rank(b) == 0:
            return True
        if b.verified and not any(c.verified and order(c) > order(b) for c in completed):
            return True
        if rules.keep_last_n and rank(b) < rules.keep_last_n:
            return True
        if rules.keep_days and b.created_at >= now - timedelta(days=rules.keep_days):
            return True
        for name, key in period_keys(b.created_at, tz).items():
            limit = getattr(rules, name)
            if not limit:
                continue
            same = [c for c in completed if period_keys(c.created_at, tz)[name] == key]
            newest_of_period = all(order(c) <= order(b) for c in same)
            later_periods = {
                period_keys(c.created_at, tz)[name]
                for c in completed
                if period_keys(c.created_at, tz)[name] > key
            }
            if newest_of_period and len(later_periods) < limit:
                return True
        return False

    return {b.id for b in completed if not kept(b)} | {
        i.id for i in items if i.status == "deleting"
    }


optional_count = st.one_of(st.none(), st.integers(min_value=1, max_value=6))
rules_strategy = st.builds(
    Rules,
    keep_last_n=optional_count,
    keep_days=optional_count,
    keep_daily=optional_count,
    keep_weekly=optional_count,
    keep_monthly=optional_count,
    keep_yearly=optional_count,
    min_keep=st.integers(min_value=1, max_value=4),
)


@st.composite
def backups(draw: st.DrawFn) -> list[Item]:
    # Offsets in minutes over ~3 years, clustered sometimes (many backups a day).
    offsets = draw(
        st.lists(
            st.one_of(
                st.integers(min_value=0, max_value=3 * 365 * 24 * 60),
                st.integers(min_value=0, max_value=3 * 24 * 60),
            ),
            max_size=40,
        )
    )
    return [
        Item(
            id=n + 1,
            created_at=T0 + timedelta(minutes=m),
            status=draw(st.sampled_from(STATUSES)),
            verified=draw(st.booleans()),
        )
        for n, m in enumerate(offsets)
    ]


@settings(max_examples=400, deadline=None)
@given(
    items=backups(),
    rules=rules_strategy,
    tz=st.sampled_from(ZONES),
    after=st.integers(min_value=0, max_value=400 * 24 * 60),
)
def test_decision_matches_the_reference_model(
    items: list[Item], rules: Rules, tz: tzinfo, after: int
) -> None:
    now = max((i.created_at for i in items), default=T0) + timedelta(minutes=after)
    decision = decide(items, rules, now, tz)
    assert set(decision.delete) == reference(items, rules, now, tz)
    # Every backup is either kept, with at least one reason, or deleted, with one.
    assert set(decision.keep) | set(decision.delete) == {i.id for i in items}
    assert not set(decision.keep) & set(decision.delete)
    assert all(decision.keep[k] for k in decision.keep)
    assert all(decision.delete[d] for d in decision.delete)


@settings(max_examples=300, deadline=None)
@given(items=backups(), rules=rules_strategy, tz=st.sampled_from(ZONES))
def test_safety_floor(items: list[Item], rules: Rules, tz: tzinfo) -> None:
    now = T0 + timedelta(days=5 * 365)  # long after everything: keep_days keeps nothing
    decision = decide(items, rules, now, tz)
    completed = sorted((i for i in items if i.status == "completed"), key=order, reverse=True)
    for item in items:
        if item.status in ("pending", "running", "failed", "cancelled"):
            assert item.id in decision.keep  # never touched
    if completed:
        assert completed[0].id in decision.keep
        assert "safety floor: newest completed backup" in decision.keep[completed[0].id]
    verified = [c for c in completed if c.verified]
    if verified:
        assert verified[0].id in decision.keep
    kept_completed = [c for c in completed if c.id in decision.keep]
    assert len(kept_completed) >= min(rules.min_keep, len(completed))


def test_reasons_name_every_rule_that_keeps_a_backup() -> None:
    day = timedelta(days=1)
    now = datetime(2026, 3, 31, 12, tzinfo=UTC)
    items = [
        Item(1, now - 40 * day, "completed"),
        Item(2, now - 10 * day, "completed", verified=True),
        Item(3, now - 2 * day, "completed"),
        Item(4, now - 2 * day + timedelta(hours=1), "completed"),
        Item(5, now - timedelta(hours=1), "failed"),
        Item(6, now, "running"),
    ]
    decision = decide(items, Rules(keep_daily=2, keep_monthly=2, min_keep=1), now)
    assert decision.keep[4] == [
        "safety floor: newest completed backup",
        "min_keep: 1 of the newest 1",
        "keep_daily: newest of 2026-03-29",
        "keep_monthly: newest of 2026-03",
    ]
    assert decision.keep[2] == [
        "safety floor: newest verified backup",
        "keep_daily: newest of 2026-03-21",
    ]
    assert decision.keep[1] == ["keep_monthly: newest of 2026-02"]
    assert decision.delete == {3: "not kept by any rule"}  # same day as 4, older
    assert decision.keep[5] == ["failed: retention only deletes completed backups"]
    assert decision.keep[6] == ["in progress (running): never touched"]


def test_a_policy_without_rules_keeps_everything() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    items = [Item(i, now - timedelta(days=i), "completed") for i in range(1, 5)]
    assert decide(items, Rules(), now).delete == {}

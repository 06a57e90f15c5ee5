"""The retention decision as a pure function: backups + policy + now -> keep (with the
reasons) and delete. No database, no clock, no storage.

The rules are a union, like restic's `forget`: a backup kept by any rule is kept.

* `keep_last_n`: the N newest completed backups.
* `keep_days`: completed backups created within the last N days (before `now`).
* `keep_daily` / `keep_weekly` / `keep_monthly` / `keep_yearly`: the newest backup of
  each of the last N days / ISO weeks / months / years *that have backups*, in the given
  timezone.
* `min_keep`: at least this many of the newest completed backups, whatever the rules say.
* Safety floor, always: the newest completed backup, the newest verified one, and the
  newest one not found corrupt (so a corrupt newest backup never costs the last good one).

Only completed backups are ever deleted. Pending and running ones are in progress and
never touched; failed, cancelled and interrupted ones hold no artifact and are left for
the history. A backup already marked `deleting` (an interrupted earlier pass) is
finished off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from opscenter.models import BackupStatus

IN_PROGRESS = frozenset({BackupStatus.PENDING, BackupStatus.RUNNING})
DELETING = BackupStatus.DELETING


@dataclass(frozen=True)
class Item:
    id: int
    created_at: datetime  # aware
    status: str
    verified: bool = False
    corrupt: bool = False  # verification found it damaged


@dataclass(frozen=True)
class Rules:
    keep_last_n: int | None = None
    keep_days: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    min_keep: int = 1

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.keep_last_n,
                self.keep_days,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_yearly,
            )
        )


@dataclass
class Decision:
    keep: dict[int, list[str]] = field(default_factory=dict)
    delete: dict[int, str] = field(default_factory=dict)

    def _keep(self, item_id: int, reason: str) -> None:
        self.keep.setdefault(item_id, []).append(reason)


Bucket = Callable[[datetime], str]

PERIODS: tuple[tuple[str, Bucket], ...] = (
    ("keep_daily", lambda d: d.strftime("%Y-%m-%d")),
    ("keep_weekly", lambda d: "{}-W{:02d}".format(*d.isocalendar()[:2])),
    ("keep_monthly", lambda d: d.strftime("%Y-%m")),
    ("keep_yearly", lambda d: f"{d.year:04d}"),
)


def _newest_first(items: Iterable[Item]) -> list[Item]:
    return sorted(items, key=lambda i: (i.created_at, i.id), reverse=True)


def decide(items: Iterable[Item], rules: Rules, now: datetime, tz: tzinfo = UTC) -> Decision:
    items = list(items)
    decision = Decision()
    completed = _newest_first(i for i in items if i.status == BackupStatus.COMPLETED)
    for item in items:
        if item.status in IN_PROGRESS:
            decision._keep(item.id, f"in progress ({item.status}): never touched")
        elif item.status == DELETING:
            decision.delete[item.id] = "deletion already decided; finishing it"
        elif item.status != BackupStatus.COMPLETED:
            decision._keep(item.id, f"{item.status}: retention only deletes completed backups")

    if completed:
        decision._keep(completed[0].id, "safety floor: newest completed backup")
    verified = [i for i in completed if i.verified]
    if verified:
        decision._keep(verified[0].id, "safety floor: newest verified backup")
    sound = [i for i in completed if not i.corrupt]
    if sound and sound[0] is not completed[0]:  # the newest is corrupt: keep the last good
        decision._keep(sound[0].id, "safety floor: newest backup not found corrupt")
    for rank, item in enumerate(completed[: rules.min_keep], start=1):
        decision._keep(item.id, f"min_keep: {rank} of the newest {rules.min_keep}")

    if rules.empty:
        for item in completed:
            decision._keep(item.id, "the policy has no rule: everything is kept")
    if rules.keep_last_n:
        for rank, item in enumerate(completed[: rules.keep_last_n], start=1):
            decision._keep(item.id, f"keep_last_n: {rank} of the last {rules.keep_last_n}")
    if rules.keep_days:
        since = now - timedelta(days=rules.keep_days)
        for item in completed:
            if item.created_at >= since:
                decision._keep(item.id, f"keep_days: within the last {rules.keep_days} days")
    for name, bucket in PERIODS:
        limit: int | None = getattr(rules, name)
        if not limit:
            continue
        newest: dict[str, Item] = {}
        for item in completed:  # newest first: the first seen of a period is its newest
            newest.setdefault(bucket(item.created_at.astimezone(tz)), item)
        for period in sorted(newest, reverse=True)[:limit]:
            decision._keep(newest[period].id, f"{name}: newest of {period}")

    for item in completed:
        if item.id not in decision.keep:
            decision.delete[item.id] = "not kept by any rule"
    return decision

"""Reactions to an event run in order when its publisher awaits them; one that fails is
logged and the next still runs (a broken retention pass never stops a backup's check)."""

from __future__ import annotations

from opscenter.core.events import Event, EventBus


async def test_reactions_run_in_order_and_survive_a_failing_one() -> None:
    bus = EventBus()
    seen: list[str] = []

    async def failing(event: Event) -> None:
        seen.append("failing")
        raise RuntimeError("boom")

    async def checking(event: Event) -> None:
        seen.append(f"checking {event.data['backup_id']}")

    bus.react_to("backup.completed", failing)
    bus.react_to("backup.completed", checking)
    await bus.react(Event("backup.failed", {"backup_id": 1}))
    assert seen == []
    await bus.react(Event("backup.completed", {"backup_id": 2}))
    assert seen == ["failing", "checking 2"]

"""Tasks (of an incident or standalone) and the weekly SLA their hours make."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opscenter.core.clock import utcnow
from opscenter.core.errors import InvalidInput
from opscenter.core.principal import Principal
from opscenter.core.scoping import check_team_access, get_readable, readable
from opscenter.incidents import service as incidents
from opscenter.incidents.schemas import (
    Person,
    SlaForecast,
    SlaWeek,
    TaskCreate,
    TaskOut,
    TaskUpdate,
)
from opscenter.models import Incident, Task, TaskStatus

FORECAST_WEEKS = 4
FORECAST_METHOD = (
    "least-squares linear trend of the weekly sla_percentage over the weeks that had "
    "requested hours, extended 4 weeks and clamped to 0-100 (the mean when fewer than 2 "
    "such weeks; 100 when none)"
)


@dataclass
class TaskFilters:
    incident_id: int | None = None
    squad: str | None = None
    status: str | None = None
    assignee_id: int | None = None


def tasks_query(principal: Principal, f: TaskFilters | None = None) -> Select[Any]:
    stmt = readable(select(Task), Task, principal)
    f = f or TaskFilters()
    for column, value in (
        (Task.incident_id, f.incident_id),
        (Task.squad, f.squad),
        (Task.status, f.status),
        (Task.assignee_id, f.assignee_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return stmt.order_by(Task.created_at.desc(), Task.id.desc())


async def get_task(session: AsyncSession, principal: Principal, task_id: int) -> Task:
    return await get_readable(session, Task, task_id, principal, name="Task")


async def outputs(session: AsyncSession, tasks: list[Task]) -> list[TaskOut]:
    names = await incidents.usernames(session, {t.assignee_id for t in tasks if t.assignee_id})
    return [_out(t, names) for t in tasks]


def _out(task: Task, names: dict[int, str]) -> TaskOut:
    who = task.assignee_id
    return TaskOut(
        id=task.id,
        title=task.title,
        description=task.description,
        squad=task.squad,
        team_id=task.team_id,
        incident_id=task.incident_id,
        assignee=Person(id=who, username=names.get(who, "?")) if who else None,
        status=task.status,
        estimated_hours=task.estimated_hours,
        actual_hours=task.actual_hours,
        due_date=task.due_date,
        completed_at=task.completed_at,
        created_at=task.created_at,
        updated_at=task.updated_at,
    )


def _set_status(task: Task, status: TaskStatus) -> None:
    task.status = status.value
    task.completed_at = utcnow() if status is TaskStatus.DONE else None


async def create_task(
    session: AsyncSession, principal: Principal, data: TaskCreate
) -> tuple[Task, Incident | None]:
    incident = None
    if data.incident_id is not None:
        incident = await incidents.get_incident(session, principal, data.incident_id)
        if data.team_id is not None and data.team_id != incident.team_id:
            raise InvalidInput("A task of an incident belongs to the incident's team")
    team_id = (
        incident.team_id if incident else data.team_id or min(principal.team_ids, default=None)
    )
    if team_id is None:
        raise InvalidInput("You belong to no team; give team_id or ask an admin to add you")
    check_team_access(principal, team_id)
    if data.assignee_id is not None:
        await incidents.check_users(session, [data.assignee_id])
    task = Task(
        team_id=team_id,
        incident_id=data.incident_id,
        title=data.title,
        description=data.description,
        squad=data.squad,
        assignee_id=data.assignee_id,
        estimated_hours=data.estimated_hours,
        actual_hours=data.actual_hours,
        due_date=data.due_date,
        created_by=principal.user_id or None,
    )
    _set_status(task, data.status)
    session.add(task)
    await session.flush()
    if incident is not None:
        await incidents.note(session, incident, principal, "task_added", f"#{task.id} {task.title}")
    return task, incident


async def update_task(
    session: AsyncSession, principal: Principal, task_id: int, data: TaskUpdate
) -> tuple[Task, dict[str, tuple[object, object]]]:
    task = await get_task(session, principal, task_id)
    changes: dict[str, tuple[object, object]] = {}
    for field in data.model_fields_set:
        value = getattr(data, field)
        if value is None and field in ("title", "squad", "status", "description"):
            raise InvalidInput(f"{field} cannot be null")
        if field == "assignee_id" and value is not None:
            await incidents.check_users(session, [value])
        old = getattr(task, field)
        new = getattr(value, "value", value)
        if old == new:
            continue
        changes[field] = (old, new)
        if field == "status":
            _set_status(task, TaskStatus(new))
        else:
            setattr(task, field, new)
    if changes:
        task.updated_at = utcnow()
        await session.flush()
        if "status" in changes and task.incident_id is not None:
            incident = await session.get(Incident, task.incident_id)
            if incident is not None:
                await incidents.note(
                    session, incident, principal, "task_status", f"#{task.id} {task.status}"
                )
    return task, changes


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=utcnow().tzinfo)


async def sla_weeks(
    session: AsyncSession, principal: Principal, weeks: int, squad: str | None
) -> list[SlaWeek]:
    """Seed 004's weeks, newest first: hours requested by the tasks created in the week,
    hours delivered by those of them that are done; one grouped query for all weeks."""
    now = utcnow()
    starts = [monday(now.date()) - timedelta(weeks=i) for i in range(weeks)]
    bounds = [_start(d) for d in starts]
    bucket = case(*((Task.created_at >= b, i) for i, b in enumerate(bounds)), else_=-1)
    delivered = case((Task.status == TaskStatus.DONE.value, Task.actual_hours), else_=0.0)
    stmt = readable(
        select(
            bucket.label("week"),
            func.coalesce(func.sum(Task.estimated_hours), 0.0),
            func.coalesce(func.sum(delivered), 0.0),
            func.count(),
        ),
        Task,
        principal,
    ).where(Task.created_at >= bounds[-1], Task.created_at < bounds[0] + timedelta(weeks=1))
    if squad is not None:
        stmt = stmt.where(Task.squad == squad)
    rows = (await session.execute(stmt.group_by("week"))).all()
    sums = {int(w): (float(r), float(d), int(n)) for w, r, d, n in rows}
    out = []
    for i, start in enumerate(starts):
        requested, done, count = sums.get(i, (0.0, 0.0, 0))
        out.append(
            SlaWeek(
                id=f"sla-{start.isoformat()}",
                week_start=start,
                week_end=start + timedelta(days=6),
                total_requested_hours=round(requested, 2),
                total_delivered_hours=round(done, 2),
                sla_percentage=round(done / requested * 100, 2) if requested > 0 else 100.0,
                squad=squad,
                tasks=count,
                created_at=now,
            )
        )
    return out


def forecast(weeks: list[SlaWeek]) -> list[SlaForecast]:
    """The next weeks by a least-squares line through the weeks that had requests."""
    ordered = list(reversed(weeks))  # oldest first: x is the week index
    points = [(x, w.sla_percentage) for x, w in enumerate(ordered) if w.total_requested_hours > 0]
    n = len(points)
    if n == 0:
        slope, intercept = 0.0, 100.0
    elif n == 1:
        slope, intercept = 0.0, points[0][1]
    else:
        mean_x = sum(x for x, _ in points) / n
        mean_y = sum(y for _, y in points) / n
        var = sum((x - mean_x) ** 2 for x, _ in points)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0
        intercept = mean_y - slope * mean_x
    last = weeks[0].week_start if weeks else monday(utcnow().date())
    result = []
    for k in range(1, FORECAST_WEEKS + 1):
        x = len(ordered) - 1 + k
        start = last + timedelta(weeks=k)
        value = min(100.0, max(0.0, intercept + slope * x))
        result.append(
            SlaForecast(
                week_start=start, week_end=start + timedelta(days=6), sla_percentage=round(value, 2)
            )
        )
    return result

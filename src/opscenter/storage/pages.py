"""The storage providers page."""

from __future__ import annotations

from opscenter.core.context import SessionDep
from opscenter.core.pages import LIST_LIMIT, View
from opscenter.core.principal import Principal
from opscenter.storage import service as storage
from opscenter.storage.schemas import StorageType


async def storage_page(principal: Principal, session: SessionDep) -> View:
    rows = (await session.scalars(storage.providers_query(principal).limit(LIST_LIMIT))).all()
    return View(
        "storage.html",
        {"providers": [storage.storage_out(p) for p in rows], "types": list(StorageType)},
    )

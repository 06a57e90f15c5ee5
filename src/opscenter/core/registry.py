"""What each domain adds to the running system, gathered through its `register(registry)`.

`app.py` and `runtime.py` walk one list of domains (`opscenter/domains.py`), so a new
domain adds its `plugin.py` and one line there, and nothing else grows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from opscenter.core.context import AppContext

#: Binds a domain to the assembled context: job handlers, reactions to events.
Wiring = Callable[["AppContext"], None]


@dataclass
class Registry:
    #: Routers under the versioned API prefix, in the order they are included.
    api_routers: list[APIRouter] = field(default_factory=list)
    #: Routers at the root (WebSocket, probes, legacy paths).
    root_routers: list[APIRouter] = field(default_factory=list)
    wirings: list[Wiring] = field(default_factory=list)

    def api(self, *routers: APIRouter) -> None:
        self.api_routers.extend(routers)

    def root(self, *routers: APIRouter) -> None:
        self.root_routers.extend(routers)

    def wire(self, wiring: Wiring) -> None:
        self.wirings.append(wiring)

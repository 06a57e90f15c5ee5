"""What each domain adds to the running system, gathered through its `register(registry)`.

`app.py` and `runtime.py` walk one list of domains (`opscenter/domains.py`), so a new
domain adds its `plugin.py` and one line there, and nothing else grows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import APIRouter

from opscenter.core.background import Background
from opscenter.core.pages import NavLink, Page, PageHandler, Widget

if TYPE_CHECKING:
    from opscenter.core.context import AppContext

#: Binds a domain to the assembled context: job handlers, reactions to events.
Wiring = Callable[["AppContext"], None]
#: Makes a domain's background service for this process, or None when it has none to run
#: here. `server` is True in the long-lived API server, False in a CLI command.
BackgroundFactory = Callable[["AppContext", bool], Background | None]


@dataclass(frozen=True)
class BackgroundService:
    make: BackgroundFactory
    #: Started before the other services and stopped after the job runner, so it hears the
    #: events of the jobs that shutdown interrupts (the notifier, the webhook queue).
    outlives_jobs: bool


@dataclass
class Registry:
    #: Routers under the versioned API prefix, in the order they are included.
    api_routers: list[APIRouter] = field(default_factory=list)
    #: Routers at the root (WebSocket, probes, legacy paths).
    root_routers: list[APIRouter] = field(default_factory=list)
    wirings: list[Wiring] = field(default_factory=list)
    #: UI pages, mounted and rendered by the web layer.
    pages: list[Page] = field(default_factory=list)
    nav_links: list[NavLink] = field(default_factory=list)
    #: Panels of the dashboard, rendered by the web layer below its own.
    widgets: list[Widget] = field(default_factory=list)
    background_services: list[BackgroundService] = field(default_factory=list)
    #: API paths (regexes after the prefix) whose routes stream their body and bound it
    #: themselves; the request body limit does not apply to them.
    streamed_uploads: list[str] = field(default_factory=list)

    def api(self, *routers: APIRouter) -> None:
        self.api_routers.extend(routers)

    def root(self, *routers: APIRouter) -> None:
        self.root_routers.extend(routers)

    def wire(self, wiring: Wiring) -> None:
        self.wirings.append(wiring)

    def page(self, path: str, handler: PageHandler, *, permission: str) -> None:
        self.pages.append(Page(path, handler, permission))

    def public_page(self, path: str, handler: PageHandler) -> None:
        """A page for anyone, signed in or not: only what the login itself needs."""
        self.pages.append(Page(path, handler, None))

    def nav(self, link: NavLink) -> None:
        self.nav_links.append(link)

    def widget(self, handler: PageHandler, *, permission: str, rank: int) -> None:
        """A dashboard panel: `handler(principal=, session=)` returns its `View`."""
        self.widgets.append(Widget(handler, permission, rank))

    def streamed_upload(self, path_pattern: str) -> None:
        """A route that streams its request body to storage under its own size limit."""
        self.streamed_uploads.append(path_pattern)

    def background(self, make: BackgroundFactory, *, outlives_jobs: bool = False) -> None:
        self.background_services.append(BackgroundService(make, outlives_jobs))

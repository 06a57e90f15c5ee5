"""What the single sign-on domain adds to the running system."""

from __future__ import annotations

from opscenter.core.pages import NavLink
from opscenter.core.registry import Registry
from opscenter.sso import pages
from opscenter.sso.router import browser, router


def register(registry: Registry) -> None:
    registry.api(router)
    registry.root(browser)
    registry.page("/sso", pages.sso_page, permission="read:users")
    registry.public_page("/sso/options", pages.login_options)
    registry.public_page("/sso/refused", pages.refused_page)
    registry.nav(NavLink("Administration", "Single sign-on", "/sso", "read:users", rank=305))

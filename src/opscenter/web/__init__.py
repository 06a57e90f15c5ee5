"""The browser UI, served by the API's own process at `/` (see router.py for its design)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from opscenter.web.pages import LoginRequired, PageError, login_redirect, render_page_error
from opscenter.web.router import router

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the pages and their static files; /api, /ws, /health, /metrics, /docs stay
    the API's because every page route is an exact path and static files live under
    /static."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(LoginRequired, login_redirect)
    app.add_exception_handler(PageError, render_page_error)

"""A browser's view of the dashboard in process: a TestClient over https with its own cookie jar per person."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from edgefleet.hub.api.app import create_app
from edgefleet.hub.context import Hub
from tests.conftest import Fleet

ORIGIN = "https://testserver"
_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _FIELD.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


class Browser:
    """One person's browser: cookies kept, redirects not followed, Origin sent on POST like Chromium does."""

    def __init__(self, hub: Hub) -> None:
        self.client = TestClient(
            create_app(hub), base_url=ORIGIN, raise_server_exceptions=False, follow_redirects=False
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(
        self, path: str, data: dict[str, str] | None = None, *, origin: str | None = ORIGIN, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if origin is not None:
            headers.setdefault("Origin", origin)
        return self.client.post(path, data=data, headers=headers, **kwargs)

    def login(self, token: str) -> httpx.Response:
        page = self.get("/ui/login")
        assert page.status_code == 200
        return self.post("/ui/login", {"csrf": csrf_of(page.text), "token": token})

    def csrf(self, path: str = "/ui/") -> str:
        page = self.get(path)
        assert page.status_code == 200, page.text
        return csrf_of(page.text)

    @property
    def web_state(self) -> Any:
        return self.client.app.state.web.state  # type: ignore[attr-defined]

    @property
    def session_cookie(self) -> str | None:
        return self.client.cookies.get("__Host-edgefleet_session")


@pytest.fixture
def browser(fleet: Fleet) -> Iterator[Browser]:
    """A browser on a hub whose dashboard sessions table starts empty (PostgreSQL keeps rows between tests)."""
    with fleet.hub.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM web_sessions"))
    return Browser(fleet.hub)


@pytest.fixture
def admin_browser(fleet: Fleet, browser: Browser) -> Browser:
    response = browser.login(fleet.admin)
    assert response.status_code == 303, response.text
    return browser


def sessions_stored(fleet: Fleet) -> list[tuple[str, str]]:
    with fleet.hub.store.engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(text("SELECT id_hash, token_id FROM web_sessions"))]


def browser_for(fleet: Fleet, token: str | None = None, **settings: Any) -> Browser:
    """A browser logged in (as admin by default) on the same hub and database with other settings."""
    hub = replace(fleet.hub, settings=fleet.hub.settings.model_copy(update=settings))
    browser = Browser(hub)
    assert browser.login(token or fleet.admin).status_code == 303
    return browser

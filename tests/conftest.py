"""Shared fixtures: a hub on SQLite and (when EDGEFLEET_TEST_POSTGRES_URL is set) on PostgreSQL.

The PostgreSQL variant creates a database of its own per test session (and per xdist
worker), so concurrent runs never see each other's rows, and drops it at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from edgefleet.agent.identity import LocalIdentity
from edgefleet.hub.api.app import create_app
from edgefleet.hub.context import Hub
from edgefleet.hub.datadir import init_data_dir, load_keys
from edgefleet.hub.db import Store
from edgefleet.hub.db.migrate import upgrade
from edgefleet.hub.services.operators import bootstrap_admin
from edgefleet.hub.settings import HubSettings

POSTGRES_URL = os.environ.get("EDGEFLEET_TEST_POSTGRES_URL")
TABLES = (
    "devices",
    "enrollment_tokens",
    "users",
    "api_tokens",
    "audit_log",
    "repo_metadata",
    "releases",
    "assignments",
    "director_metadata",
    "fleet_environment",
    "device_environment",
    "device_updates",
    "device_event_cursors",
    "deployments",
    "deployment_devices",
    "device_token_uses",
)


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(scope="session")
def hub_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir's key material for the whole session (key generation is the slow part)."""
    path = tmp_path_factory.mktemp("hubkeys") / "hub"
    init_data_dir(path, hostnames=("hub.test",), now=datetime.now(UTC))
    return path


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    store = Store(f"sqlite:///{path}")
    upgrade(store)
    store.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this session, or None when PostgreSQL tests are off."""
    if not POSTGRES_URL:
        yield None
        return
    name = f"edgefleet_test_{os.getpid()}_{secrets.token_hex(4)}"
    base = make_url(POSTGRES_URL)
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    store = Store(url)
    upgrade(store)
    store.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backends() -> list[Any]:
    """sqlite, and postgres when configured; scripts/test always configures it and fails on any skip."""
    postgres = pytest.param(
        "postgres", marks=pytest.mark.skipif(not POSTGRES_URL, reason="EDGEFLEET_TEST_POSTGRES_URL unset")
    )
    return ["sqlite", postgres]


@pytest.fixture(params=backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        db = tmp_path / "hub.db"
        shutil.copy(sqlite_template, db)
        return f"sqlite:///{db}"
    url: str = request.getfixturevalue("postgres_url")
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
        conn.execute(text("UPDATE audit_head SET seq = 0, hash = :h WHERE id = 1"), {"h": "0" * 64})
    store.dispose()
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(hub_keys_dir: Path, database_url: str, clock: FakeClock, tmp_path: Path) -> Iterator[Hub]:
    settings = HubSettings(data_dir=hub_keys_dir, database_url=database_url, artifacts_dir=tmp_path / "artifacts")
    store = Store(settings.sqlalchemy_url())
    instance = Hub(settings=settings, store=store, keys=load_keys(hub_keys_dir), clock=clock)
    yield instance
    store.dispose()


@pytest.fixture
def api(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def admin_token(hub: Hub) -> str:
    return bootstrap_admin(hub)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Fleet:
    """Helpers over one test hub: operators of each role, tokens, enrolled devices."""

    api: TestClient
    hub: Hub
    admin: str
    clock: FakeClock
    tmp: Path
    data_dirs: dict[str, Path] = field(default_factory=dict)

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = auth(token or self.admin)
        return self.api.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    def operator_token(self, role: str, name: str | None = None) -> str:
        name = name or f"{role}-{secrets.token_hex(3)}"
        assert self.call("POST", "/users", json={"name": name, "role": role}).status_code == 201
        created = self.call("POST", "/api-tokens", json={"user": name})
        assert created.status_code == 201, created.text
        return str(created.json()["token"])

    def enrollment_token(self, **body: Any) -> str:
        body.setdefault("fleet", "f1")
        response = self.call("POST", "/enrollment-tokens", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def device_client(self) -> DeviceClient:
        return DeviceClient(self.api, clock=self.clock)

    def enroll(self, token: str | None = None, **kwargs: Any) -> LocalIdentity:
        data_dir = self.tmp / f"device-{secrets.token_hex(4)}"
        local = enroll(self.device_client(), data_dir, token=token or self.enrollment_token(), arch="arm64", **kwargs)
        self.data_dirs[local.device_id] = data_dir
        return local

    def device_call(self, identity: LocalIdentity, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**auth(identity.token(now=self.clock())), **kwargs.pop("headers", {})}
        return self.api.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    def counts(self) -> dict[str, int]:
        """Rows per table: 'nothing written' checks compare these (a spent device token is not a change)."""
        counted = [t for t in TABLES if t != "device_token_uses"]
        with self.hub.store.engine.connect() as conn:
            return {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in counted}


@pytest.fixture
def fleet(api: TestClient, hub: Hub, admin_token: str, clock: FakeClock, tmp_path: Path) -> Fleet:
    return Fleet(api=api, hub=hub, admin=admin_token, clock=clock, tmp=tmp_path)

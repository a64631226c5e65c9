"""Starting points of a hub: `init` a data dir (and database), open a `Hub`, and `serve` it over HTTPS."""

from __future__ import annotations

import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from edgefleet.hub.api.app import create_app
from edgefleet.hub.context import Clock, Hub, utc_now
from edgefleet.hub.datadir import init_data_dir, load_keys
from edgefleet.hub.db import Store
from edgefleet.hub.db.migrate import upgrade
from edgefleet.hub.errors import HubConfigError, UnavailableError
from edgefleet.hub.scheduler import Scheduler
from edgefleet.hub.services import director, online_keys
from edgefleet.hub.services.operators import bootstrap_admin
from edgefleet.hub.settings import HubSettings


@dataclass(frozen=True)
class InitResult:
    """What `hub init` tells its user once."""

    data_dir: Path
    ca_path: Path
    admin_token: str
    database: str


def open_hub(settings: HubSettings, *, clock: Clock = utc_now, migrate: bool = True) -> Hub:
    """Load keys, connect to the database, (by default) apply migrations, and settle the online keys.

    The roots in the database must name keys this data dir holds; after `hub keys rotate
    --role director` the next director root is signed here, before any device asks.

    Raises:
        HubConfigError: unusable keys or database, or a root naming a key the data dir lacks.
    """
    keys = load_keys(settings.data_dir)
    store = Store(settings.sqlalchemy_url())
    try:
        if migrate:
            upgrade(store)
        hub = Hub(settings=settings, store=store, keys=keys, clock=clock)
        online_keys.check_held(hub)
        director.settle_root(hub)
    except UnavailableError as exc:
        store.dispose()
        raise HubConfigError(exc.code, exc.message) from exc
    except BaseException:
        store.dispose()
        raise
    return hub


def init_hub(settings: HubSettings, *, hostnames: tuple[str, ...], clock: Clock = utc_now) -> InitResult:
    """Create the data dir, migrate the database and create the first admin token.

    If the database step fails, the new data dir is removed again, so the same command can
    simply be re-run once the database is fixed.
    """
    init_data_dir(settings.data_dir, hostnames=hostnames, now=clock())
    try:
        hub = open_hub(settings, clock=clock)
        try:
            token = bootstrap_admin(hub)
        finally:
            hub.store.dispose()
    except BaseException:
        shutil.rmtree(settings.data_dir, ignore_errors=True)
        raise
    return InitResult(
        data_dir=settings.data_dir, ca_path=hub.keys.ca_path, admin_token=token, database=hub.store.dialect
    )


def serve(settings: HubSettings, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve the API over HTTPS (TLS 1.2 or newer) until interrupted."""
    hub = open_hub(settings)
    app = create_app(hub)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        ssl_certfile=str(hub.keys.tls_cert_path),
        ssl_keyfile=str(hub.keys.tls_key_path),
        timeout_graceful_shutdown=5,
        # Long-polls are bounded by settings; keep-alive stays a little longer than the longest one.
        timeout_keep_alive=int(settings.long_poll_max_seconds) + 5,
        limit_concurrency=settings.max_concurrent_requests,
    )
    config.load()
    if config.ssl is None:
        raise HubConfigError("tls_unavailable", "uvicorn did not build a TLS context")
    config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    scheduler = Scheduler(hub)
    scheduler.start()
    try:
        uvicorn.Server(config).run()
    finally:
        scheduler.stop()
        hub.store.dispose()

"""Starting points of a hub: `init` a data dir (and database), open a `Hub`, and `serve` it over HTTPS."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from edgefleet.collector import pace_collector
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
from edgefleet.tlsbuffers import limit_tls_read_buffers


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


WORKER_SETTINGS = "EDGEFLEET_HUB_WORKER_SETTINGS"
"""The environment variable that carries the hub's settings (JSON) to the worker processes of `serve`."""
WORKER_HEALTHCHECK_SECONDS = 60
"""A worker that does not answer its supervisor's ping for this long is killed and replaced. uvicorn's
default, 5 s, killed busy workers on a saturated 2-core node, and their devices' reconnections made it busier."""
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's multiprocess mode: every worker writes its metrics there; `/metrics` adds them up."""


def serve(settings: HubSettings, *, host: str, port: int, workers: int = 1, log_level: str = "info") -> None:
    """Serve the API over HTTPS (TLS 1.2 or newer) until interrupted, in `workers` processes on one port.

    With one worker the hub runs in this process. With more (PostgreSQL only: SQLite is one
    process's database) this process applies migrations, runs the rollout scheduler and keeps
    the workers running (uvicorn's supervisor restarts one that dies); each worker serves the API
    on the shared socket with caches and a change listener of its own, and their Prometheus
    metrics are added up in a directory they share.

    Raises:
        HubConfigError: more than one worker on SQLite, or unusable keys or database.
    """
    if workers > 1 and not settings.sqlalchemy_url().startswith("postgresql"):
        raise HubConfigError(
            "sqlite_single_process",
            f"SQLite serves one process: {workers} workers need PostgreSQL (--database-url postgresql://...)",
        )
    pace_collector()  # per-device caches, a connection per device: the whole heap collected seldom
    hub = open_hub(settings)
    config = uvicorn.Config(
        create_app(hub) if workers == 1 else f"{__name__}:worker_app",
        factory=workers > 1,
        workers=workers,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        ssl_certfile=str(hub.keys.tls_cert_path),
        ssl_keyfile=str(hub.keys.tls_key_path),
        ssl_context_factory=_tls_context,
        timeout_graceful_shutdown=5,
        # Long-polls are bounded by settings; keep-alive stays a little longer than the longest one.
        timeout_keep_alive=int(settings.long_poll_max_seconds) + 5,
        limit_concurrency=settings.max_concurrent_requests,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )
    # With one worker the app's lifespan starts this process's listener; a supervisor runs no app,
    # and its scheduler's fleet view would otherwise read every device on every pass.
    listener = hub.listen() if workers > 1 else None
    scheduler = Scheduler(hub)
    scheduler.start()
    try:
        if workers == 1:
            limit_tls_read_buffers()  # a connection per device: 16 KiB read buffers, not asyncio's 256 KiB
            uvicorn.Server(config).run()
        else:
            _supervise(settings, config)
    finally:
        scheduler.stop()
        if listener is not None:
            listener.stop()
        hub.store.dispose()


def _tls_context(_config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """The TLS context uvicorn builds for the hub's certificate, refusing what is older than TLS 1.2 (every worker)."""
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _supervise(settings: HubSettings, config: uvicorn.Config) -> None:
    """Run `config.workers` worker processes on one socket until interrupted; their metrics in a shared directory."""
    saved = {name: os.environ.get(name) for name in (WORKER_SETTINGS, METRICS_DIR)}
    with tempfile.TemporaryDirectory(prefix="edgefleet-hub-metrics-") as metrics_dir:
        # Spawned workers start a fresh interpreter: they read these before importing anything.
        os.environ[WORKER_SETTINGS] = settings.model_dump_json()
        os.environ[METRICS_DIR] = metrics_dir  # this run's own: a directory left by another would add up old counts
        try:
            _Supervisor(config, sockets=[listening_socket(config)]).run()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, told at once when a worker dies while it waits for the worker's answer.

    Every half second the supervisor asks each worker whether it is alive and waits up to
    `WORKER_HEALTHCHECK_SECONDS` for the answer. uvicorn keeps its own copy of the worker's end
    of that pipe open, so a worker killed just after its process was seen running (the kernel
    still tearing it down) left the supervisor waiting the whole minute before replacing it.
    With that copy closed once the worker holds its own (a spawned worker receives it when it
    starts), the worker's death ends the wait: the pipe reads as closed.
    """

    def init_processes(self) -> None:
        super().init_processes()
        self._release_worker_ends()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._release_worker_ends()

    def handle_signals(self) -> None:  # SIGHUP replaces the workers, SIGTTIN adds one
        super().handle_signals()
        self._release_worker_ends()

    def _release_worker_ends(self) -> None:
        for process in self.processes:
            process.child_conn.close()  # closing twice is harmless


def listening_socket(config: uvicorn.Config) -> socket.socket:
    """The workers' socket as uvicorn binds it, marked as TCP so that asyncio turns Nagle off on each connection.

    uvicorn binds it with protocol 0 (uvicorn issue 3149), and asyncio sets ``TCP_NODELAY`` on
    an accepted connection only when its socket says ``IPPROTO_TCP``: without this, the body of
    every answer after a connection's first waits for the device's delayed ACK, about 40 ms on
    Linux. (With one worker uvicorn lets asyncio bind, which gets the protocol right.)
    """
    bound = config.bind_socket()
    if bound.family not in (socket.AF_INET, socket.AF_INET6):
        return bound
    return socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())


def worker_app() -> FastAPI:
    """The API app of one worker process of `serve` (uvicorn's factory), from the settings its parent passed."""
    raw = os.environ.get(WORKER_SETTINGS)
    if raw is None:
        raise HubConfigError("not_a_worker", f"{WORKER_SETTINGS} is unset: start workers with 'hub serve --workers N'")
    # The parent applied migrations and settled the director root before starting the workers.
    metrics_dir = os.environ.get(METRICS_DIR)
    limit_tls_read_buffers()  # as `serve` does when it serves in its own process
    pace_collector()  # as `serve` does, before the hub's threads and connections
    hub = open_hub(HubSettings.model_validate_json(raw), migrate=False)
    return create_app(hub, metrics_dir=Path(metrics_dir) if metrics_dir else None)

"""The cross-process change feed on PostgreSQL: a thread that LISTENs for changed devices and wakes a `Notifier`.

A `Tx` that changes what a device is told sends ``pg_notify(CHANNEL, device_id)`` (or
`EVERY_DEVICE`) inside its transaction; PostgreSQL delivers it to every listening session on
commit and never on rollback. Each hub process runs one `DeviceListener` on a connection of
its own (autocommit, ``application_name`` `APPLICATION_NAME`), started and stopped with the
API app, and forwards each notification to its `Notifier`. When the connection drops it
reconnects with capped exponential backoff, then wakes every held request: notifications
sent while it was away are lost, so each request reads its answer again.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg

from edgefleet.hub.notify import Notifier

log = logging.getLogger(__name__)

CHANNEL = "edgefleet_devices"
EVERY_DEVICE = "*"
"""The payload that wakes every device (a fleet-wide change)."""
APPLICATION_NAME = "edgefleet-hub-listen"
RECEIVE_SECONDS = 0.25
"""How long one wait for notifications lasts: bounds how late the thread sees `stop`."""
CONNECT_TIMEOUT_SECONDS = 5
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 30.0
KEEPALIVE_IDLE_SECONDS = 5
"""TCP keepalives (then every 2 s, 3 tries) and a round trip every `HEARTBEAT_SECONDS` whose bytes must be
acknowledged within `UNACKED_SECONDS`: a peer that vanished silently is noticed within about 15 s, and the
process's device caches are not used from then on (`DeviceCaches.use_while`)."""
HEARTBEAT_SECONDS = 5.0
UNACKED_SECONDS = 10


class DeviceListener:
    """One hub process's LISTEN connection, in a daemon thread, forwarding device changes to `notifier`."""

    def __init__(self, conninfo: str, notifier: Notifier, *, application_name: str = APPLICATION_NAME) -> None:
        self._conninfo = conninfo
        self._notifier = notifier
        self._application_name = application_name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()
        """Set while LISTEN is in effect (and every request woken since it began)."""
        self.backend_pid: int | None = None
        """The PostgreSQL backend of the latest connection."""

    def start(self) -> None:
        """Begin listening in the background; returns at once (missed changes are covered by a wake of all)."""
        if self._thread is not None:
            raise RuntimeError("listener already started")
        self._thread = threading.Thread(target=self._run, name="edgefleet-hub-listen", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = RECEIVE_SECONDS + CONNECT_TIMEOUT_SECONDS + 1) -> None:
        """Stop and wait (at most `timeout` seconds) for the thread and its connection to end; blocking."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                self._listen()
            except psycopg.Error as exc:
                log.warning("device change listener disconnected: %s", exc)
            except Exception:
                log.exception("device change listener failed")  # a bug; the feed must come back all the same
            finally:
                self.listening.clear()
            if time.monotonic() - began > BACKOFF_MAX_SECONDS:
                delay = BACKOFF_FIRST_SECONDS  # it ran well for a while: a new outage starts afresh
            self._stopping.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    def _listen(self) -> None:
        with psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=self._application_name,
            keepalives=1,
            keepalives_idle=KEEPALIVE_IDLE_SECONDS,
            keepalives_interval=2,
            keepalives_count=3,
            tcp_user_timeout=UNACKED_SECONDS * 1000,
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.backend_pid = conn.info.backend_pid
            # Whatever was sent before LISTEN took effect is lost: every held request reads again.
            self._notifier.wake_all()
            self.listening.set()
            heartbeat = time.monotonic()
            while not self._stopping.is_set():
                for notification in conn.notifies(timeout=RECEIVE_SECONDS):
                    self._forward(notification)
                if time.monotonic() - heartbeat >= HEARTBEAT_SECONDS:
                    conn.execute("SELECT 1")  # a dead connection fails here (or within UNACKED_SECONDS)
                    heartbeat = time.monotonic()

    def _forward(self, notification: psycopg.Notify) -> None:
        payload = notification.payload
        if payload == EVERY_DEVICE:
            self._notifier.wake_all()
        else:
            self._notifier.wake((payload,))

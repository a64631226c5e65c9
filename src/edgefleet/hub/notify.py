"""Wake-ups for held device long-polls: per-device subscriptions, woken from any thread.

`Store` wakes devices after a commit on SQLite; on PostgreSQL the listener in `hub.db.listen`
wakes them for commits of every hub process. `api.longpoll.settle` subscribes *before* it
reads a device's answer and waits between reads. A wake sets a flag that stays set until the
subscription's next `wait` takes it, so a change committed between a read and the wait
after it is never lost: that wait returns at once and the answer is read again.

Memory is bounded by the held requests: a device has an entry only while a request for it
is subscribed. Woken from worker threads (the synchronous database code) and from the
listener's thread, the flags are set on the subscriber's event loop through
`call_soon_threadsafe`, one call per loop and wake.

Changes of the TUF metadata (a signed root, snapshot, timestamp or targets) travel the same
way under one key that is no device's, `METADATA_CHANGED`: they go to the watchers of
metadata (the process's newest versions, `Hub.repository_heads`), never to the device ones.
A device's new update outcome (`outcome_key`) goes only to the watchers of outcomes (the
rollout scheduler's fleet view): it changes no answer the device gets, and wakes no one. A
change of what a device is told but not of its record (`answers_key`: its assignments, its
environment) goes to the watchers of answers (the target and director caches) instead of the
device watchers, and wakes the device's held requests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

Watcher = Callable[[Iterable[str] | None], None]
"""Told of every change before any held request is woken: the device ids, or None for every device."""
METADATA_CHANGED = "tuf:metadata"
"""The change key of any newly stored repository or director-root metadata (a device id is a UUID)."""
OUTCOME_PREFIX = "outcome:"
ANSWERS_PREFIX = "answers:"


def outcome_key(device_id: str) -> str:
    """The change key of a device's new update outcome: it changes nothing the device is answered, only rollouts."""
    return OUTCOME_PREFIX + device_id


def answers_key(device_id: str) -> str:
    """The change key of what a device is told (its assignments, its environment), its record unchanged."""
    return ANSWERS_PREFIX + device_id


class Subscription:
    """One held request's interest in one device; a wake is kept until the next `wait` takes it."""

    __slots__ = ("_event", "_loop", "device_id")

    def __init__(self, device_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.device_id = device_id
        self._loop = loop
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """True once woken (at once when woken since the last wait); False after `timeout` seconds."""
        if not self._event.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                return False
        # Cleared before the caller reads again: a wake delivered after this sets it anew.
        self._event.clear()
        return True


class Notifier:
    """The devices some held request waits for, and the way to wake them; one per process (per `Store`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._watchers: list[Watcher] = []
        self._metadata_watchers: list[Callable[[], None]] = []
        self._outcome_watchers: list[Watcher] = []
        self._answer_watchers: list[Watcher] = []

    def watch(self, watcher: Watcher) -> None:
        """Tell `watcher` of every change from now on (the device caches), before the requests it wakes read again."""
        self._watchers.append(watcher)

    def watch_answers(self, watcher: Watcher) -> None:
        """Be told of the devices whose answers changed but not their records (`answers_key`); with `watch`."""
        self._answer_watchers.append(watcher)

    def watch_outcomes(self, watcher: Watcher) -> None:
        """`watch`, and be told of the devices whose update outcomes changed too (`outcome_key`)."""
        self._outcome_watchers.append(watcher)

    def watch_metadata(self, watcher: Callable[[], None]) -> None:
        """Call `watcher` whenever `METADATA_CHANGED` is announced, or anything may have changed."""
        self._metadata_watchers.append(watcher)

    def forget(self, device_ids: Iterable[str] | None) -> None:
        """Tell the watchers these devices changed (None: every device, and the metadata) without waking anyone."""
        if device_ids is None:
            for metadata_watcher in self._metadata_watchers:
                metadata_watcher()
            for watcher in (*self._watchers, *self._outcome_watchers):
                watcher(None)
            return
        devices: set[str] = set()
        answers: set[str] = set()
        outcomes: set[str] = set()
        metadata = False
        for key in device_ids:
            if key == METADATA_CHANGED:
                metadata = True
            elif key.startswith(OUTCOME_PREFIX):
                outcomes.add(key.removeprefix(OUTCOME_PREFIX))
            elif key.startswith(ANSWERS_PREFIX):
                answers.add(key.removeprefix(ANSWERS_PREFIX))
            else:
                devices.add(key)
        if metadata:
            for metadata_watcher in self._metadata_watchers:
                metadata_watcher()
        if devices:
            for watcher in self._watchers:
                watcher(devices)
        if answers:
            for watcher in self._answer_watchers:
                watcher(answers)
        if devices or answers or outcomes:
            for watcher in self._outcome_watchers:
                watcher(devices | answers | outcomes)

    @contextmanager
    def subscribe(self, device_id: str) -> Iterator[Subscription]:
        """Interest in `device_id` for the block; enter it before the first read of the answer.

        Must be entered in a running event loop (the one that will `wait`).
        """
        subscription = Subscription(device_id, asyncio.get_running_loop())
        with self._lock:
            self._subscribers.setdefault(device_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            with self._lock:
                subscribers = self._subscribers.get(device_id)
                if subscribers is not None:
                    subscribers.discard(subscription)
                    if not subscribers:
                        del self._subscribers[device_id]

    def wake(self, device_ids: Iterable[str]) -> None:
        """Wake the requests held for these devices (safe from any thread; devices nobody waits for cost nothing)."""
        device_ids = set(device_ids)
        self.forget(device_ids)
        held = {key.removeprefix(ANSWERS_PREFIX) for key in device_ids}
        with self._lock:
            woken = [s for device_id in held for s in self._subscribers.get(device_id, ())]
        _deliver(woken)

    def wake_all(self) -> None:
        """Wake every held request: after a fleet-wide change, or when changes may have been missed."""
        self.forget(None)
        with self._lock:
            woken = [s for subscribers in self._subscribers.values() for s in subscribers]
        _deliver(woken)

    def waiting(self) -> int:
        """How many devices some request is subscribed for."""
        with self._lock:
            return len(self._subscribers)


def _deliver(subscriptions: list[Subscription]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
    for subscription in subscriptions:
        by_loop.setdefault(subscription._loop, []).append(subscription._event)
    for loop, events in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all, events)
        except RuntimeError:
            # That loop is closed: the requests it held are gone, and so is their interest.
            continue


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()

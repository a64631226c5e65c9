"""The long-poll notifier: wakes kept until taken (no lost wake between a read and the wait), any thread, any loop."""

from __future__ import annotations

import asyncio
import random
import threading
import time

from edgefleet.hub.notify import METADATA_CHANGED, Notifier, answers_key, outcome_key


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_a_wake_between_the_read_and_the_wait_is_not_lost():
    notifier = Notifier()
    answer = {"version": 1}

    async def held():
        with notifier.subscribe("d1") as changes:
            seen = answer["version"]  # the read
            # A change commits (in a worker thread) after the read, before the wait begins.
            await asyncio.to_thread(lambda: (answer.update(version=2), notifier.wake(["d1"])))
            started = time.monotonic()
            assert await changes.wait(10) is True
            assert time.monotonic() - started < 1
            assert answer["version"] != seen

    run(held())


def test_a_wake_is_taken_once_and_wakes_coalesce():
    notifier = Notifier()

    async def held():
        with notifier.subscribe("d1") as changes:
            notifier.wake(["d1"])
            notifier.wake(["d1", "d1"])
            await asyncio.sleep(0)  # let the loop run the delivery
            assert await changes.wait(5) is True
            assert await changes.wait(0.05) is False

    run(held())


def test_a_wait_times_out_without_a_wake_and_other_devices_do_not_wake_it():
    notifier = Notifier()

    async def held():
        with notifier.subscribe("d1") as changes:
            notifier.wake(["d2"])
            started = time.monotonic()
            assert await changes.wait(0.2) is False
            assert 0.15 < time.monotonic() - started < 2

    run(held())


def test_a_wake_from_another_thread_ends_a_wait_in_progress():
    notifier = Notifier()

    async def held():
        with notifier.subscribe("d1") as changes:
            timer = threading.Timer(0.1, notifier.wake, args=(["d1"],))
            timer.start()
            started = time.monotonic()
            assert await changes.wait(10) is True
            assert time.monotonic() - started < 2
            timer.join()

    run(held())


def test_wake_all_reaches_every_subscriber_on_every_loop():
    notifier = Notifier()
    subscribed = threading.Barrier(3)
    results: dict[str, bool] = {}

    def loop_thread(device_id):
        async def held():
            with notifier.subscribe(device_id) as changes:
                await asyncio.to_thread(subscribed.wait)
                results[device_id] = await changes.wait(10)

        run(held())

    threads = [threading.Thread(target=loop_thread, args=(name,)) for name in ("d1", "d2")]
    for thread in threads:
        thread.start()
    subscribed.wait(timeout=10)
    notifier.wake_all()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {"d1": True, "d2": True}


def test_only_devices_with_a_subscriber_take_memory():
    notifier = Notifier()

    async def held():
        with notifier.subscribe("d1"), notifier.subscribe("d1"), notifier.subscribe("d2"):
            assert notifier.waiting() == 2
        assert notifier.waiting() == 0

    run(held())
    notifier.wake([f"device-{n}" for n in range(10_000)])
    notifier.wake_all()
    assert notifier.waiting() == 0


def test_a_wake_for_a_closed_loop_is_dropped():
    notifier = Notifier()
    loop = asyncio.new_event_loop()

    async def subscribe_and_leave():
        notifier.subscribe("d1").__enter__()  # left subscribed, as if its loop died under it

    loop.run_until_complete(subscribe_and_leave())
    loop.close()
    notifier.wake(["d1"])  # must not raise
    notifier.wake_all()


def test_a_poller_always_ends_with_the_last_committed_version():
    """Read, wait, read again, against a writer that changes and wakes at random moments."""
    notifier = Notifier()
    state = {"version": 0}
    lock = threading.Lock()
    rng = random.Random(6)
    final = 300

    def writer():
        for _ in range(final):
            time.sleep(rng.random() / 2000)
            with lock:
                state["version"] += 1
            notifier.wake(["d1"])

    async def poller():
        with notifier.subscribe("d1") as changes:
            seen = state["version"]
            thread = threading.Thread(target=writer)
            thread.start()
            while seen != final:
                # Without a wake in hand, a stale read would wait out the whole timeout here.
                assert await changes.wait(5), f"missed a wake: saw {seen}, now {state['version']}"
                with lock:
                    seen = state["version"]
            await asyncio.to_thread(thread.join)

    run(poller())


def test_a_metadata_change_goes_to_the_metadata_watchers_only():
    notifier = Notifier()
    devices: list[object] = []
    metadata: list[None] = []
    notifier.watch(lambda ids: devices.append(None if ids is None else sorted(ids)))
    notifier.watch_metadata(lambda: metadata.append(None))
    notifier.wake([METADATA_CHANGED])
    assert (devices, len(metadata)) == ([], 1)
    notifier.forget({METADATA_CHANGED, "d1"})
    assert (devices, len(metadata)) == ([["d1"]], 2)
    notifier.forget(["d2"])
    assert (devices, len(metadata)) == ([["d1"], ["d2"]], 2)
    notifier.wake_all()  # anything may have changed: the metadata too
    assert (devices, len(metadata)) == ([["d1"], ["d2"], None], 3)


def test_an_outcome_goes_to_the_outcome_watchers_only_and_wakes_no_one():
    notifier = Notifier()
    devices: list[object] = []
    outcomes: list[object] = []
    notifier.watch(lambda ids: devices.append(None if ids is None else sorted(ids)))
    notifier.watch_outcomes(lambda ids: outcomes.append(None if ids is None else sorted(ids)))

    async def woken() -> bool:
        with notifier.subscribe("d1") as subscription:
            notifier.wake([outcome_key("d1")])
            return await subscription.wait(0.05)

    assert asyncio.run(woken()) is False
    assert (devices, outcomes) == ([], [["d1"]])
    notifier.forget([outcome_key("d1"), "d2"])  # an outcome watcher is told of every device change too
    assert (devices, outcomes) == ([["d2"]], [["d1"], ["d1", "d2"]])
    notifier.wake_all()
    assert (devices, outcomes) == ([["d2"], None], [["d1"], ["d1", "d2"], None])


def test_changed_answers_go_to_the_answer_watchers_and_wake_the_device():
    notifier = Notifier()
    told: dict[str, list[object]] = {"devices": [], "answers": [], "outcomes": []}
    notifier.watch(lambda ids: told["devices"].append(sorted(ids or ())))
    notifier.watch_answers(lambda ids: told["answers"].append(sorted(ids or ())))
    notifier.watch_outcomes(lambda ids: told["outcomes"].append(sorted(ids or ())))

    async def woken() -> bool:
        with notifier.subscribe("d1") as subscription:
            notifier.wake([answers_key("d1")])
            return await subscription.wait(1)

    assert asyncio.run(woken()) is True
    assert told == {"devices": [], "answers": [["d1"]], "outcomes": [["d1"]]}

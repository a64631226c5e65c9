"""The collector on a clock (young each second, the whole heap seldom, nothing by itself), and its pauses timed."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from typing import Any

import pytest

from edgefleet.collector import FULL_EVERY, KEPT_PAUSES, YOUNG_EVERY, Clock, Pauses, watch_pauses

PROBE = """
import gc, json, threading
from edgefleet.collector import pace_collector
clock = pace_collector()
again = pace_collector(young_every=5.0)
print(json.dumps({"after": gc.get_threshold(), "frozen": gc.get_freeze_count(), "enabled": gc.isenabled(),
                  "same": again is clock, "every": [clock.young_every, clock.full_every],
                  "threads": [t.name for t in threading.enumerate() if t.daemon]}))
"""

CLOCKED = """
import gc, json, time, weakref
from edgefleet.collector import pace_collector, watch_pauses
pauses = watch_pauses()
clock = pace_collector(young_every=0.05, full_every=0.4)
time.sleep(1.3)
clock.stop()
pauses.take()
class Node: pass
before = len(pauses.take())
for _ in range(200_000):  # far past CPython's and the old count's thresholds: nothing collects by itself
    node = Node(); node.me = node
automatic = len(pauses.take()) - before
print(json.dumps({"running": clock.running, "automatic": automatic}))
"""

TIMED = """
import gc, json, time, weakref
from edgefleet.collector import pace_collector, watch_pauses
pauses = watch_pauses()
clock = pace_collector(young_every=0.05, full_every=0.4)
class Node: pass
node = Node(); node.me = node
gone = weakref.ref(node)
del node
time.sleep(1.3)
generations = [pause.generation for pause in pauses.take()]
print(json.dumps({"young": generations.count(0), "middle": generations.count(1), "full": generations.count(2),
                  "cycle_freed": gone() is None}))
"""


def probe(code: str) -> dict[str, Any]:
    # In a process of its own: the clock is for the whole process, not for the test run's.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def test_pacing_turns_automatic_collection_off_freezes_what_exists_and_starts_one_clock() -> None:
    found = probe(PROBE)
    assert found["after"][0] == 0  # no automatic collection
    assert found["frozen"] > 1000  # the modules' objects
    assert found["enabled"] is True  # the clock's collections run
    assert found["same"] is True  # once per process
    assert found["every"] == [YOUNG_EVERY, FULL_EVERY]
    assert found["threads"].count("collector-clock") == 1


def test_the_clock_collects_the_young_generation_often_and_the_whole_heap_seldom() -> None:
    found = probe(TIMED)
    assert found["young"] >= 10  # about 1.3 / 0.05, less those that were full
    assert 2 <= found["full"] <= 4  # at 0.4, 0.8, 1.2 s
    assert found["middle"] == 0  # the middle generation waits for the full collections
    assert found["cycle_freed"] is True  # cyclic garbage is still freed


def test_nothing_collects_by_itself_once_the_clock_stops() -> None:
    found = probe(CLOCKED)
    assert found["running"] is False
    assert found["automatic"] == 0


@pytest.mark.parametrize(("young", "full"), [(0, 10), (-1, 10), (10, 5)])
def test_a_clock_needs_positive_intervals_the_full_one_no_shorter(young: float, full: float) -> None:
    with pytest.raises(ValueError, match="young_every"):
        Clock(young, full)


def test_each_collection_is_timed_and_read_once() -> None:
    pauses = watch_pauses()
    assert watch_pauses() is pauses  # one hook per process
    assert gc.callbacks.count(pauses.hook) == 1
    pauses.take()
    gc.collect()
    taken = pauses.take()
    assert [pause.generation for pause in taken] == [2]
    assert 0 <= taken[0].seconds < 60
    assert 0 <= taken[0].cpu_seconds <= taken[0].seconds + 0.01  # the thread's CPU in it, at most its time
    assert pauses.take() == []


def test_pauses_not_read_are_bounded() -> None:
    pauses = Pauses()
    for _ in range(KEPT_PAUSES + 5):
        pauses.hook("start", {"generation": 0})
        pauses.hook("stop", {"generation": 0})
    assert len(pauses.take()) == KEPT_PAUSES
    assert pauses.dropped == 5


def test_a_collection_whose_start_was_not_seen_is_not_timed() -> None:
    pauses = Pauses()
    pauses.hook("stop", {"generation": 2})  # hooked while it ran
    assert pauses.take() == []

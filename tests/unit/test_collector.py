"""The collector's pacing (rarer collections, what exists frozen out, in a process of its own), and its pauses timed."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from edgefleet.collector import KEPT_PAUSES, MIDDLE, OLD, YOUNG, Pauses, watch_pauses

PROBE = """
import gc, json
from edgefleet.collector import pace_collector
pace_collector()
print(json.dumps({"after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "enabled": gc.isenabled()}))
"""


def test_pacing_raises_the_thresholds_and_freezes_what_exists() -> None:
    # In a process of its own: the pacing is for the whole process, not for the test run's.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    found = json.loads(out.stdout)
    assert found["after"] == [YOUNG, MIDDLE, OLD]
    assert found["frozen"] > 1000  # the modules' objects
    assert found["enabled"] is True  # cycles are still collected


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

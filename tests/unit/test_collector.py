"""The collector's pacing: rarer collections, what exists frozen out, in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys

from edgefleet.collector import MIDDLE, OLD, YOUNG

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

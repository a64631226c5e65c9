"""Deterministic chance: every random choice of the simulation is a hash of the seed and what it is about.

The same seed gives the same fleet on any machine and in any order of events: which update
fails on which device, which devices are offline in which period, how long each phase
takes. Pure functions.
"""

from __future__ import annotations

import hashlib
import math


def draw(seed: int, *about: object) -> float:
    """A number in [0, 1) fixed by `seed` and `about` (e.g. ``"fail", device, app, mark``)."""
    text = ":".join(str(part) for part in (seed, *about))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def update_fails(seed: int, *, device: int, app: str, mark: str, rate: float) -> bool:
    """Whether this device's update of `app` to the release `mark` fails (a rate of 1 always fails, 0 never)."""
    return draw(seed, "fail", device, app, mark) < rate


def offline_in(seed: int, *, device: int, period: int, share: float) -> bool:
    """Whether the device has no connection during offline period number `period`."""
    return draw(seed, "offline", device, period) < share


def spread(seed: int, mean: float, *about: object) -> float:
    """A duration between 0.5 and 1.5 times `mean`, fixed by the seed."""
    return mean * (0.5 + draw(seed, "spread", *about))


LOOKAHEAD = 10_000
"""Offline periods looked ahead at most for the next change (beyond it: never, for the simulation's purposes)."""


def connectivity(seed: int, *, device: int, elapsed: float, share: float, period: float) -> tuple[bool, float]:
    """(whether the device is offline now, seconds until that changes; `math.inf` when it does not).

    Time is cut into periods of `period` seconds from the start; in each, a `share` of the
    devices (chosen anew per period) is offline.
    """
    current = int(elapsed // period)
    offline = offline_in(seed, device=device, period=current, share=share)
    if share in (0, 1):
        return offline, math.inf
    for ahead in range(current + 1, current + LOOKAHEAD):
        if offline_in(seed, device=device, period=ahead, share=share) != offline:
            return offline, ahead * period - elapsed
    return offline, math.inf

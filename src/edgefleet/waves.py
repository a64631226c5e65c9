"""Rollout arithmetic (pure): wave specs, how many devices each wave reaches, canary order, failure thresholds.

    1%,10%,50%,100%     cumulative shares of the deployment's targets
    5,50,100%           or cumulative device counts, mixed freely

A wave's size is cumulative: wave N reaches the first `reach[N]` devices of the canary
order. Shares round up, so every wave of a non-empty target reaches at least one more
device than the wave before until all are reached, and the last wave always reaches every
target (a spec must end at 100%). The canary order hashes each device ID with the
deployment's name: the same deployment picks the same canaries on every run and every hub
process, and a device that joins later takes its place without reshuffling the others.
Percentages are exact (fractions, no floating point), so 5% of 20 is 1 and never 1.0000001.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from edgefleet.errors import EdgefleetError

MAX_WAVES = 20
RANKS_KEPT = 100_000
"""Canary ranks remembered (a scheduler pass orders every target of a deployment again): about 20 MB at most."""
ORDERS_KEPT = 4
"""Canary orders remembered (one per deployment and set of targets)."""
MAX_SPEC = 200
_PERCENT = re.compile(r"^(?P<number>\d{1,3}(?:\.\d{1,3})?)%$")
_COUNT = re.compile(r"^[1-9]\d{0,6}$")


class WaveError(EdgefleetError, ValueError):
    """A wave spec or threshold that cannot be used."""


@dataclass(frozen=True, slots=True)
class Wave:
    """One wave: a cumulative share of the targets (`share`, 0 < share <= 1) or a cumulative `count`."""

    share: Fraction | None = None
    count: int | None = None

    def reach(self, total: int) -> int:
        """How many of `total` targets this wave has reached when it is done (before the floor of earlier waves)."""
        if self.share is not None:
            return math.ceil(self.share * total)
        return min(self.count or 0, total)

    def text(self) -> str:
        return str(self.count) if self.share is None else percent_text(self.share)


def percent_text(share: Fraction) -> str:
    """A share of one as a percentage: ``5%``, ``0.5%``."""
    value = share * 100
    return f"{value.numerator}%" if value.denominator == 1 else f"{float(value):g}%"


def percent(text: str) -> Fraction:
    """`5%` or `0.5%` as an exact fraction of one (0 to 1).

    Raises:
        WaveError: not a percentage from 0% to 100% with at most three decimals.
    """
    found = _PERCENT.match(text.strip())
    if found is None:
        raise WaveError(f"{text!r} is not a percentage like 5% or 0.5%")
    value = Fraction(found["number"]) / 100
    if value > 1:
        raise WaveError(f"{text!r} is over 100%")
    return value


def parse_waves(text: str) -> tuple[Wave, ...]:
    """Waves from `1%,10%,50%,100%` (shares, counts, or both), growing, ending at 100%.

    Raises:
        WaveError: malformed, not growing, not ending at 100%, or too many waves.
    """
    if len(text) > MAX_SPEC:
        raise WaveError(f"wave spec longer than {MAX_SPEC} characters")
    parts = [part.strip() for part in text.split(",")]
    if not parts or len(parts) > MAX_WAVES:
        raise WaveError(f"between 1 and {MAX_WAVES} waves")
    waves: list[Wave] = []
    for part in parts:
        if part.endswith("%"):
            share = percent(part)
            if share == 0:
                raise WaveError("a wave of 0% reaches nobody")
            waves.append(Wave(share=share))
        elif _COUNT.match(part):
            waves.append(Wave(count=int(part)))
        else:
            raise WaveError(f"{part!r} is neither a percentage (10%) nor a device count (25)")
    if waves[-1].share != 1:
        raise WaveError("the last wave must be 100% (every target is reached in the end)")
    shares = [w.share for w in waves if w.share is not None]
    counts = [w.count for w in waves if w.count is not None]
    if shares != sorted(set(shares)) or counts != sorted(set(counts)):
        raise WaveError("waves must grow: each share and each count larger than the one before")
    return tuple(waves)


def reach(waves: Iterable[Wave], total: int) -> list[int]:
    """Devices reached when each wave is done (cumulative), for `total` targets.

    Never shrinking; each wave reaches at least one more device than the one before while
    any remain; the last reaches all.
    """
    reached: list[int] = []
    before = 0
    for wave in waves:
        now = max(wave.reach(total), min(before + 1, total))
        reached.append(now)
        before = now
    if reached:
        reached[-1] = total
    return reached


def canary_order(key: str, device_ids: Iterable[str]) -> list[str]:
    """The order in which a deployment (named `key`) reaches its targets: by a hash of (key, device), then the ID.

    The last few orders are remembered: a scheduler pass asks again for the same targets
    until one of them changes.
    """
    return list(_ordered(key, frozenset(device_ids)))


@functools.lru_cache(maxsize=ORDERS_KEPT)
def _ordered(key: str, device_ids: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(device_ids, key=lambda device: (_rank(key, device), device)))


@functools.lru_cache(maxsize=RANKS_KEPT)
def _rank(key: str, device_id: str) -> bytes:
    return hashlib.sha256(f"{key}\x00{device_id}".encode()).digest()


def over_threshold(failed: int, size: int, max_failure: Fraction) -> bool:
    """Whether `failed` of a wave of `size` devices is more than the share `max_failure` (exact).

    With small waves this is strict: at 5%, one failure in a wave of 1 to 19 devices passes it.
    """
    if size <= 0:
        return False
    return Fraction(failed, size) > max_failure

"""What the dashboard's pages show, computed from service results: filters, counts, chart and bar geometry.

Pure functions of values (no I/O, no clock), so each page's numbers are tested directly.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgefleet.errors import EdgefleetError
from edgefleet.hub.services.device_state import FLEET_STATES, DeviceSummary, FleetView
from edgefleet.selector import TAG_KEY, TAG_VALUE

STATES = (*FLEET_STATES, "pending", "rejected", "revoked")
"""Every value of a device's `state` filter: the fleet states, then registry statuses."""
NOTHING = "(nothing)"
"""The release bucket of devices that report no app."""
MAX_FILTER_CHARS = 200
_RELEASE_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}@[A-Za-z0-9_.+\-]{1,64}$")


class FilterError(EdgefleetError, ValueError):
    """A device-list filter that cannot be understood; the message says which and why."""


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """The device list's filters: free-text search, one tag (``KEY`` or ``KEY=VALUE``), state, release."""

    q: str = ""
    tag: str = ""
    state: str = ""
    release: str = ""

    @property
    def active(self) -> bool:
        return bool(self.q or self.tag or self.state or self.release)


def parse_filter(params: Mapping[str, str]) -> DeviceFilter:
    """Validate the query's filters (pure).

    Raises:
        FilterError: a value too long, an unknown state, or a malformed tag or release.
    """
    values = {name: params.get(name, "").strip() for name in ("q", "tag", "state", "release")}
    for name, value in values.items():
        if len(value) > MAX_FILTER_CHARS:
            raise FilterError(f"{name} is longer than {MAX_FILTER_CHARS} characters")
        if "\x00" in value:
            raise FilterError(f"{name} contains a NUL character")
    if values["state"] and values["state"] not in STATES:
        raise FilterError(f"state must be one of {', '.join(STATES)}")
    key, has_value, value = values["tag"].partition("=")
    if values["tag"] and not (TAG_KEY.fullmatch(key) and (not has_value or TAG_VALUE.fullmatch(value))):
        raise FilterError("tag must be KEY or KEY=VALUE (a tag name, then optionally = and a value)")
    if values["release"] and values["release"] != NOTHING and not _RELEASE_RE.fullmatch(values["release"]):
        raise FilterError("release must be APP@VERSION, e.g. sensor@1.2.0")
    return DeviceFilter(**values)


def _searchable(summary: DeviceSummary) -> str:
    device = summary.device
    words = [device.id, device.fleet, device.hostname or "", device.arch]
    words += [f"{k}={v}" for k, v in device.tags.items()]
    words += [f"{app}@{version}" for app, version in summary.running.items()]
    return "\n".join(words).lower()


def matches(summary: DeviceSummary, found: DeviceFilter) -> bool:
    """Whether a device passes every filter (pure); search is case-insensitive, over id, fleet, hostname, tags."""
    device = summary.device
    if found.state and summary.state != found.state:
        return False
    if found.tag:
        key, sep, value = found.tag.partition("=")
        if key == "fleet":
            if sep and device.fleet != value:
                return False
        elif key not in device.tags or (sep and device.tags[key] != value):
            return False
    if found.release:
        releases = {f"{app}@{version}" for app, version in summary.running.items()}
        if found.release == NOTHING:
            if releases:
                return False
        elif found.release not in releases:
            return False
    return not found.q or found.q.lower() in _searchable(summary)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a filtered list: its rows, the total that matched, and where it is."""

    rows: list[DeviceSummary]
    total: int
    number: int
    pages: int


def page_of(view: FleetView, found: DeviceFilter, *, number: int, size: int) -> Page:
    """The `number`th page (from 1) of the devices that pass the filter (pure); past the end, the last page."""
    selected = [s for s in view.devices if matches(s, found)]
    pages = max(1, -(-len(selected) // size))
    number = min(max(number, 1), pages)
    start = (number - 1) * size
    return Page(rows=selected[start : start + size], total=len(selected), number=number, pages=pages)


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of a chart: label, count, and its width in percent of the longest."""

    label: str
    count: int
    width: float


def bars(counts: Sequence[tuple[str, int]]) -> list[Bar]:
    """Bars scaled to the largest count (pure); all zero-width when every count is 0."""
    top = max((c for _, c in counts), default=0)
    return [Bar(label=label, count=count, width=round(100 * count / top, 1) if top else 0.0) for label, count in counts]


@dataclass(frozen=True, slots=True)
class Overview:
    """The fleet overview's numbers."""

    total: int
    by_state: list[Bar]
    by_status: dict[str, int]
    by_release: list[Bar]
    complete: bool


def overview(view: FleetView) -> Overview:
    """Devices by state (the four fleet states, for accepted devices), by registry status and by running release."""
    states = Counter(s.state for s in view.devices)
    statuses = Counter(s.device.status for s in view.devices)
    releases: Counter[str] = Counter()
    for summary in view.devices:
        if summary.device.status != "accepted":
            continue
        running = [f"{app}@{version}" for app, version in sorted(summary.running.items())]
        releases.update(running or [NOTHING])
    return Overview(
        total=len(view.devices),
        by_state=bars([(state, states.get(state, 0)) for state in FLEET_STATES]),
        by_status=dict(sorted(statuses.items())),
        by_release=bars(sorted(releases.items(), key=lambda item: (-item[1], item[0]))),
        complete=view.complete,
    )


SEGMENTS = ("updated", "downloading", "pending", "offline", "failed", "restored")
"""The parts of a wave's progress bar, in drawing order."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A part of a wave's bar: which count, how many, where it starts and how wide it is (0-100)."""

    name: str
    count: int
    x: float
    width: float


@dataclass(frozen=True, slots=True)
class WaveBar:
    """A wave's row: its number, how many devices it reaches in all, its own size, and its bar."""

    wave: int
    reach: int
    expected: int
    size: int
    counts: dict[str, int]
    segments: list[Segment]
    current: bool


def wave_bars(waves: Sequence[tuple[int, Mapping[str, int]]], *, current: int) -> list[WaveBar]:
    """Each wave's stacked bar (pure): its devices' counts as shares of the devices it reaches.

    `waves` is (cumulative reach, counts) per wave; `current` the 0-based wave in progress.
    A wave expects the devices its reach adds to the previous wave's (or its size, if larger).
    """
    rows = []
    previous = 0
    for index, (reached, counts) in enumerate(waves):
        size = counts.get("size", 0)
        expected = max(reached - previous, size)
        previous = max(previous, reached)
        x = 0.0
        segments = []
        for name in SEGMENTS:
            count = counts.get(name, 0)
            width = round(100 * count / expected, 2) if expected else 0.0
            width = min(width, round(100 - x, 2))
            if count and width > 0:
                segments.append(Segment(name=name, count=count, x=x, width=width))
                x = round(x + width, 2)
        rows.append(
            WaveBar(
                wave=index + 1,
                reach=reached,
                expected=expected,
                size=size,
                counts={name: counts.get(name, 0) for name in SEGMENTS},
                segments=segments,
                current=index == current,
            )
        )
    return rows

"""The dashboard's pure view logic: filters, paging, chart bars, wave bars, and the device state it counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.hub.records import Device
from edgefleet.hub.services.device_state import DeviceSummary, FleetView, health_of
from edgefleet.hub.web.views import (
    NOTHING,
    DeviceFilter,
    FilterError,
    bars,
    matches,
    overview,
    page_of,
    parse_filter,
    wave_bars,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OFFLINE_AFTER = timedelta(minutes=3)


def device(n: int = 1, *, status: str = "accepted", seen: datetime | None = NOW, **fields: Any) -> Device:
    values: dict[str, Any] = {
        "id": f"00000000-0000-4000-8000-{n:012x}",
        "fleet": "f1",
        "tags": {"env": "prod"},
        "status": status,
        "arch": "arm64",
        "hostname": f"host-{n}",
        "public_key_pem": "",
        "key_fingerprint": "",
        "cert_pem": None,
        "cert_serial": None,
        "cert_not_after": None,
        "enrollment_token_id": None,
        "enrolled_at": NOW,
        "updated_at": NOW,
        "last_seen_at": seen,
        "reported": {},
    }
    values.update(fields)
    return Device(**values)


def running(version: str, **services: Any) -> dict[str, Any]:
    return {"apps": {"sensor": {"version": version, "services": services}}}


def health(
    d: Device, assigned: dict[str, str] | None = None, outcomes: dict[str, tuple[str, str]] | None = None
) -> str:
    return health_of(d, assigned or {}, outcomes or {}, now=NOW, offline_after=OFFLINE_AFTER)


def test_device_states_in_their_order_of_precedence() -> None:
    assert health(device(status="pending")) == "pending"
    assert health(device(status="revoked")) == "revoked"
    assert health(device()) == "online"
    assert health(device(seen=None)) == "offline"
    assert health(device(seen=NOW - timedelta(minutes=4))) == "offline"
    assert health(device(seen=NOW - timedelta(minutes=3))) == "online"
    assert health(device(), {"sensor": "2.0"}) == "updating"
    assert health(device(reported=running("2.0")), {"sensor": "2.0"}) == "online"
    assert health(device(reported=running("1.0")), {"sensor": "2.0"}, {"sensor": ("rolled-back", "2.0")}) == "failed"
    # an old failure of another version does not count
    assert health(device(reported=running("2.0")), {"sensor": "2.0"}, {"sensor": ("failed", "1.5")}) == "online"
    unhealthy = running("2.0", web={"state": "running", "health": "unhealthy"})
    assert health(device(reported=unhealthy), {"sensor": "2.0"}) == "failed"
    stopped = running("2.0", web={"state": "exited"})
    assert health(device(reported=stopped, seen=None), {"sensor": "2.0"}) == "failed"  # failed before offline
    assert health(device(reported={"apps": "garbage"}), {"sensor": "2.0"}) == "updating"


def summary(d: Device, state: str = "online", run: dict[str, str] | None = None) -> DeviceSummary:
    return DeviceSummary(device=d, state=state, running=run or {}, assigned={})


def test_filters_parse_or_say_what_is_wrong() -> None:
    assert parse_filter({"q": " x ", "tag": "env=prod", "state": "failed", "release": "sensor@1.0.0"}) == DeviceFilter(
        q="x", tag="env=prod", state="failed", release="sensor@1.0.0"
    )
    assert parse_filter({}) == DeviceFilter()
    assert not parse_filter({}).active
    assert parse_filter({"release": NOTHING}).release == NOTHING
    for bad, message in (
        ({"state": "exploded"}, "state must be one of"),
        ({"tag": "<b>"}, "tag must be KEY"),
        ({"tag": "a=b=c"}, "tag must be KEY"),
        ({"release": "sensor"}, "release must be APP@VERSION"),
        ({"q": "x" * 201}, "longer than 200"),
        ({"q": "a\x00b"}, "NUL"),
    ):
        with pytest.raises(FilterError, match=message):
            parse_filter(bad)


def test_matching_by_tag_state_release_and_search() -> None:
    a = summary(device(1, tags={"env": "prod", "line": "a"}, hostname="Press-7"), "online", {"sensor": "1.0"})
    b = summary(device(2, tags={"env": "dev"}), "failed")
    assert matches(a, DeviceFilter(tag="env=prod"))
    assert not matches(b, DeviceFilter(tag="env=prod"))
    assert matches(a, DeviceFilter(tag="line"))
    assert not matches(b, DeviceFilter(tag="line"))
    assert matches(b, DeviceFilter(tag="fleet=f1"))
    assert not matches(b, DeviceFilter(tag="fleet=f2"))
    assert matches(b, DeviceFilter(state="failed"))
    assert not matches(a, DeviceFilter(state="failed"))
    assert matches(a, DeviceFilter(release="sensor@1.0"))
    assert not matches(b, DeviceFilter(release="sensor@1.0"))
    assert matches(b, DeviceFilter(release=NOTHING))
    assert not matches(a, DeviceFilter(release=NOTHING))
    assert matches(a, DeviceFilter(q="press"))
    assert not matches(b, DeviceFilter(q="press"))
    assert matches(a, DeviceFilter(q="line=a"))
    assert matches(a, DeviceFilter(q="SENSOR@1"))
    assert matches(b, DeviceFilter(q=b.device.id[-5:]))


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=1, max_value=10), st.integers(-5, 20))
def test_pages_cover_every_match_once(count: int, size: int, number: int) -> None:
    view = FleetView(devices=[summary(device(n)) for n in range(count)], complete=True)
    pages = page_of(view, DeviceFilter(), number=1, size=size).pages
    assert pages == max(1, -(-count // size))
    seen = [s.device.id for p in range(1, pages + 1) for s in page_of(view, DeviceFilter(), number=p, size=size).rows]
    assert seen == [s.device.id for s in view.devices]
    clamped = page_of(view, DeviceFilter(), number=number, size=size)
    assert 1 <= clamped.number <= pages
    assert len(clamped.rows) <= size


def test_overview_counts_and_bars() -> None:
    view = FleetView(
        devices=[
            summary(device(1), "online", {"sensor": "1.0"}),
            summary(device(2), "online", {"sensor": "1.0", "cam": "3"}),
            summary(device(3), "failed"),
            summary(device(4, status="pending"), "pending"),
        ],
        complete=True,
    )
    found = overview(view)
    assert found.total == 4
    assert [(b.label, b.count, b.width) for b in found.by_state] == [
        ("online", 2, 100.0),
        ("offline", 0, 0.0),
        ("updating", 0, 0.0),
        ("failed", 1, 50.0),
    ]
    assert found.by_status == {"accepted": 3, "pending": 1}
    assert [(b.label, b.count) for b in found.by_release] == [("sensor@1.0", 2), (NOTHING, 1), ("cam@3", 1)]
    assert [b.width for b in bars([("a", 0), ("b", 0)])] == [0.0, 0.0]


def test_wave_bars_stack_the_counts_within_the_wave() -> None:
    counts = {"size": 4, "updated": 2, "downloading": 1, "pending": 0, "offline": 0, "failed": 1, "restored": 0}
    first, second = wave_bars([(4, counts), (10, {"size": 0})], current=1)
    assert first.expected == 4
    assert not first.current
    assert [(s.name, s.x, s.width) for s in first.segments] == [
        ("updated", 0.0, 50.0),
        ("downloading", 50.0, 25.0),
        ("failed", 75.0, 25.0),
    ]
    assert second.expected == 6
    assert second.segments == []
    assert second.current


@given(
    st.lists(
        st.tuples(
            st.integers(0, 50),
            st.dictionaries(st.sampled_from(["size", "updated", "failed", "pending"]), st.integers(0, 60)),
        ),
        max_size=5,
    )
)
def test_wave_bars_never_overflow(waves: list[tuple[int, dict[str, int]]]) -> None:
    for row in wave_bars(waves, current=0):
        assert all(s.width > 0 for s in row.segments)
        assert sum(s.width for s in row.segments) <= 100.0 + 1e-6
        assert all(s.x + s.width <= 100.0 + 1e-6 for s in row.segments)

"""When a state report is sent: what changed since the last one the hub took, the moving figures by their share."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.bounds import DEFAULT_BOUNDS
from edgefleet.agent.report import report_due, volatile

LAST: dict[str, Any] = {
    "apps": {"web": {"version": "1.0.0", "services": {"main": {"state": "running", "restarts": 0}}}},
    "agent_version": "0.1.0",
    "disk_free": 8_000_000_000,
    "mem_available": 400_000_000,
    "last_error": None,
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


def test_the_first_report_and_one_past_the_refresh_are_sent() -> None:
    assert report_due(LAST, None, last_at=None, now=0.0)
    assert not report_due(LAST, LAST, last_at=0.0, now=DEFAULT_BOUNDS.report_refresh - 1)
    assert report_due(LAST, LAST, last_at=0.0, now=DEFAULT_BOUNDS.report_refresh)


@given(
    st.dictionaries(st.text(max_size=12), json_values, max_size=6), st.floats(0, DEFAULT_BOUNDS.report_refresh - 0.001)
)
def test_the_same_report_within_the_refresh_is_not_sent(properties: dict[str, Any], age: float) -> None:
    assert not report_due(properties, properties, last_at=100.0, now=100.0 + age)


@pytest.mark.parametrize(
    "change",
    [
        {"apps": {}},
        {"apps": {"web": {"version": "1.0.0", "services": {"main": {"state": "exited", "restarts": 0}}}}},
        {"last_error": "engine: cannot reach the engine"},
        {"agent_version": "0.2.0"},
        {"engine": {"kind": "podman"}},  # a figure that appears
    ],
)
def test_any_change_but_the_moving_figures_is_sent(change: dict[str, Any]) -> None:
    assert report_due(LAST | change, LAST, last_at=0.0, now=1.0)


def test_a_figure_that_goes_is_a_change() -> None:
    assert report_due({k: v for k, v in LAST.items() if k != "last_error"}, LAST, last_at=0.0, now=1.0)


@pytest.mark.parametrize(("key", "share"), sorted(volatile().items()))
def test_the_moving_figures_count_only_when_they_moved_by_their_share(key: str, share: float) -> None:
    old = LAST[key]
    assert not report_due(LAST | {key: int(old * (1 + share * 0.9))}, LAST, last_at=0.0, now=1.0)
    assert not report_due(LAST | {key: int(old * (1 - share * 0.9))}, LAST, last_at=0.0, now=1.0)
    assert report_due(LAST | {key: int(old * (1 + share * 1.1))}, LAST, last_at=0.0, now=1.0)
    assert report_due(LAST | {key: int(old * (1 - share * 1.1))}, LAST, last_at=0.0, now=1.0)
    assert report_due(LAST | {key: None}, LAST, last_at=0.0, now=1.0)  # unknown now

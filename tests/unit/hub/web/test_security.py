"""CSRF checks, bounded form parsing and the live-stream bounds of the dashboard, as pure functions."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from edgefleet.hub.errors import AuthenticationError
from edgefleet.hub.web import live
from edgefleet.hub.web.errors import CsrfError, FormError
from edgefleet.hub.web.forms import parse_form
from edgefleet.hub.web.security import check_origin, check_token, origin_of

OWN = "https://hub.example:8443"


def test_origin_must_be_the_dashboards_own() -> None:
    check_origin(origin=OWN, referer=None, expected=OWN)
    check_origin(origin="HTTPS://Hub.Example:8443", referer=None, expected=OWN)
    check_origin(origin=None, referer=f"{OWN}/ui/devices?x=1", expected=OWN)
    for origin, referer in (
        ("https://evil.example", None),
        ("http://hub.example:8443", None),
        ("https://hub.example", None),
        ("https://hub.example:8443.evil.example", None),
        (None, "https://evil.example/ui/"),
        (None, "not a url"),
        (None, None),
        ("null", None),
        (OWN + "/", None),
    ):
        with pytest.raises(CsrfError):
            check_origin(origin=origin, referer=referer, expected=OWN)
    assert origin_of("javascript:alert(1)") is None
    assert origin_of("https://[::1") is None


def test_tokens_are_compared_whole() -> None:
    check_token("abc", "abc")
    for given in (None, "", "abd", "ab", "abcd", "x" * 500, "\u00e9bc"):
        with pytest.raises(CsrfError):
            check_token(given, "abc")


def test_forms_parse_within_bounds() -> None:
    assert parse_form(b"token=efa_x&csrf=a%2Bb&empty=") == {"token": "efa_x", "csrf": "a+b", "empty": ""}
    assert parse_form(b"") == {}
    for body in (b"a=1&a=2", b"a=%ff", b"a=\xff", b"a=%00", b"&".join(b"f%d=1" % i for i in range(17))):
        with pytest.raises(FormError) as caught:
            parse_form(body)
        assert caught.value.status == 400


def test_stream_slots_are_bounded() -> None:
    slots = live.StreamSlots(2)
    assert slots.take()
    assert slots.take()
    assert not slots.take()
    slots.give_back()
    assert slots.take()
    slots.give_back()
    slots.give_back()
    slots.give_back()
    assert slots.open == 0


def test_events_carry_every_line_as_data() -> None:
    assert live.event("progress", "<p>\n  a\r\nb</p>") == "event: progress\ndata: <p>\ndata:   a\ndata: b</p>\n\n"


class FakeClock:
    """Moves a quarter second on every look, so a stream's lifetime passes without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def collect(slots: live.StreamSlots, render: Callable[[], str], *, lifetime: float, clock: FakeClock) -> list[str]:
    async def run() -> list[str]:
        stream = live.stream(slots, render, name="p", interval=0.001, lifetime=lifetime, clock=clock)
        return [chunk async for chunk in stream]

    return asyncio.run(run())


def test_a_stream_sends_changes_only_and_ends_after_its_lifetime() -> None:
    slots = live.StreamSlots(1)
    clock = FakeClock()
    calls = itertools.count()
    chunks = collect(slots, lambda: "a" if next(calls) < 2 else "b", lifetime=20, clock=clock)
    assert chunks[0] == f"retry: {live.RECONNECT_MS}\n\n"
    assert [c for c in chunks if c.startswith("event:")] == ["event: p\ndata: a\n\n", "event: p\ndata: b\n\n"]
    assert ": keep-alive\n\n" in chunks  # nothing changed for longer than the keep-alive period
    assert 20 <= clock.now < 30
    assert slots.open == 0  # given back at the end


def test_a_full_house_answers_busy_and_a_failed_render_ends_the_stream() -> None:
    slots = live.StreamSlots(1)
    assert slots.take()
    assert collect(slots, lambda: "x", lifetime=10, clock=FakeClock()) == [live.busy()]
    slots.give_back()

    def ended() -> str:
        raise AuthenticationError("session_expired", "gone")

    assert collect(slots, ended, lifetime=10, clock=FakeClock()) == [f"retry: {live.RECONNECT_MS}\n\n"]
    assert slots.open == 0

"""Update events the agent buffers are always acceptable to the hub's event schema."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.runner import EVENT_TEXT_LIMITS, event, printable
from edgefleet.protocol import DeviceEvent


def test_printable_strips_nul_and_replaces_invalid_text() -> None:
    assert printable("a\x00b", 10) == "ab"
    assert printable("bad \udcff surrogate", 100) == "bad ? surrogate"


def test_printable_keeps_the_end_of_long_text() -> None:
    assert printable("x" * 10 + "END", 5) == "xxEND"


@given(reason=st.text(max_size=5000), logs=st.text(max_size=20000))
def test_any_reason_and_logs_make_an_event_the_hub_accepts(reason: str, logs: str) -> None:
    body = event(None, "web", "failed", to_release="1.0.0", reason=reason, logs=logs, service="web")
    parsed = DeviceEvent.model_validate(body | {"seq": 1})
    assert len(parsed.reason or "") <= EVENT_TEXT_LIMITS["reason"]
    assert "\x00" not in (parsed.logs or "")

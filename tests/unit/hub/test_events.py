"""A device event's audit detail: always within the audit log's bound, keeping the newest log lines."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.hub import audit
from edgefleet.hub.services.events import audit_detail
from edgefleet.protocol import DeviceEvent

# Control characters and non-ASCII text grow when written as JSON; NUL and lone surrogates are refused upstream.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8192)


def event(*, reason: str | None, logs: str | None) -> DeviceEvent:
    return DeviceEvent(
        seq=2**63 - 1,
        at=datetime(2026, 11, 22, 9, tzinfo=UTC),
        app="a" * 63,
        from_release="1" * 64,
        to_release="2" * 64,
        status="rolled-back",
        service="s" * 63,
        reason=reason,
        logs=logs,
    )


@given(reason=st.none() | TEXT.map(lambda text: text[:2000]), logs=st.none() | TEXT)
def test_the_detail_fits_and_keeps_what_it_can(reason: str | None, logs: str | None) -> None:
    detail = audit_detail(event(reason=reason, logs=logs))
    assert len(audit.canonical(detail)) <= audit.MAX_DETAIL_BYTES
    assert detail["seq"] == 2**63 - 1
    assert detail["app"] == "a" * 63
    if detail.get("truncated"):
        assert (logs or "").endswith(detail["logs"] or "")  # the newest lines survive
        assert (reason or "").startswith(detail["reason"] or "")
    else:
        assert (detail["reason"], detail["logs"]) == (reason, logs)


def test_a_small_event_is_kept_whole() -> None:
    detail = audit_detail(event(reason="exited with code 3", logs="panic\n"))
    assert "truncated" not in detail
    assert detail["logs"] == "panic\n"


def test_logs_go_before_the_reason() -> None:
    detail = audit_detail(event(reason="r" * 2000, logs="\x1b" * 8192))  # 6 bytes each as JSON
    assert detail["truncated"] is True
    assert detail["reason"] == "r" * 2000
    assert set(detail["logs"]) <= {"\x1b"}

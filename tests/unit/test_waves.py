"""Rollout arithmetic: wave specs, wave sizes (small fleets and rounding), canary order, failure thresholds."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.waves import MAX_WAVES, Wave, WaveError, canary_order, over_threshold, parse_waves, percent, reach


def test_a_spec_of_shares_and_counts() -> None:
    waves = parse_waves("1%, 10%,50%,100%")
    assert [w.text() for w in waves] == ["1%", "10%", "50%", "100%"]
    assert reach(waves, 1000) == [10, 100, 500, 1000]
    assert reach(waves, 10) == [1, 2, 5, 10]  # 1% of 10 rounds up to one canary
    assert reach(waves, 3) == [1, 2, 3, 3]  # each wave one more while any remain
    assert reach(waves, 1) == [1, 1, 1, 1]
    assert reach(waves, 0) == [0, 0, 0, 0]
    assert reach(parse_waves("5,50,100%"), 20) == [5, 20, 20]
    assert reach(parse_waves("0.5%,100%"), 1000) == [5, 1000]
    assert parse_waves("0.5%,100%")[0].text() == "0.5%"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "neither a percentage"),
        ("10%,50%", "last wave must be 100%"),
        ("50%,10%,100%", "must grow"),
        ("10%,10%,100%", "must grow"),
        ("5,5,100%", "must grow"),
        ("0%,100%", "reaches nobody"),
        ("101%", "over 100%"),
        ("10 %,100%", "not a percentage"),
        ("-5,100%", "neither a percentage"),
        ("1e3,100%", "neither a percentage"),
        ("0,100%", "neither a percentage"),
        ("NaN%,100%", "not a percentage"),
        (",".join(["100%"] * (MAX_WAVES + 1)), "between 1 and"),
        ("1" * 300, "longer than"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(WaveError, match=message):
        parse_waves(text)


@given(
    shares=st.lists(st.integers(min_value=1, max_value=99_999), max_size=8, unique=True),
    total=st.integers(min_value=0, max_value=100_000),
)
def test_waves_never_shrink_always_advance_and_end_with_everyone(shares: list[int], total: int) -> None:
    waves = (*(Wave(share=Fraction(s, 100_000)) for s in sorted(shares)), Wave(share=Fraction(1)))
    reached = reach(waves, total)
    assert reached[-1] == total
    assert all(0 <= n <= total for n in reached)
    for before, after in zip([0, *reached], reached, strict=False):
        assert after >= before
        assert after > before or before == total  # progress while devices remain
    for wave, n in zip(waves, reached, strict=True):
        assert n >= wave.share * total  # never less than asked (shares round up)


@given(
    ids=st.lists(st.uuids().map(str), min_size=1, max_size=50, unique=True),
    newcomer=st.uuids().map(str),
)
def test_canary_order_is_stable_and_newcomers_do_not_reshuffle(ids: list[str], newcomer: str) -> None:
    order = canary_order("dep-1", ids)
    assert order == canary_order("dep-1", reversed(ids))  # the same on every run and every hub process
    assert sorted(order) == sorted(ids)
    with_newcomer = canary_order("dep-1", [*ids, newcomer])
    assert [d for d in with_newcomer if d != newcomer] == order


def test_different_deployments_pick_different_canaries() -> None:
    ids = [f"device-{n}" for n in range(100)]
    assert canary_order("dep-1", ids)[:10] != canary_order("dep-2", ids)[:10]


@pytest.mark.parametrize(
    ("failed", "size", "limit", "over"),
    [
        (0, 1, "5%", False),
        (1, 1, "5%", True),  # a single canary that fails is 100%
        (1, 19, "5%", True),
        (1, 20, "5%", False),  # exactly 5% is not more than 5%
        (2, 20, "5%", True),
        (3, 1000, "0.3%", False),
        (4, 1000, "0.3%", True),
        (0, 0, "0%", False),
        (1, 3, "0%", True),
        (3, 3, "100%", False),
    ],
)
def test_failure_threshold_is_exact(failed: int, size: int, limit: str, over: bool) -> None:
    assert over_threshold(failed, size, percent(limit)) is over


@given(failed=st.integers(0, 10_000), size=st.integers(1, 10_000), tenths=st.integers(0, 1000))
def test_threshold_agrees_with_integer_arithmetic(failed: int, size: int, tenths: int) -> None:
    failed = min(failed, size)
    limit = percent(f"{tenths / 10:.1f}%")
    assert over_threshold(failed, size, limit) is (failed * 1000 > tenths * size)

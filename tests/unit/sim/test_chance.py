"""Chance from the seed: the same inputs give the same choices; rates and shares come out as asked."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.sim.chance import connectivity, draw, offline_in, spread, update_fails


def test_a_draw_is_fixed_by_its_seed_and_subject() -> None:
    assert draw(7, "fail", 3, "sensor") == draw(7, "fail", 3, "sensor")
    assert draw(7, "fail", 3, "sensor") != draw(8, "fail", 3, "sensor")
    assert draw(7, "fail", 3, "sensor") != draw(7, "fail", 4, "sensor")
    assert 0 <= draw(7, "x") < 1


def test_failure_rates_of_zero_and_one_are_exact() -> None:
    for device in range(500):
        assert not update_fails(1, device=device, app="sensor", mark="1-1.0.0", rate=0.0)
        assert update_fails(1, device=device, app="sensor", mark="1-1.0.0", rate=1.0)


def test_the_failure_rate_holds_over_a_fleet() -> None:
    failing = sum(update_fails(3, device=d, app="sensor", mark="2-1.1.0", rate=0.02) for d in range(20_000))
    assert 300 < failing < 500  # 2 % of 20 000 is 400


def test_a_retry_is_a_new_draw() -> None:
    first = [update_fails(3, device=d, app="a", mark="2-1.1.0", rate=0.5) for d in range(200)]
    retried = [update_fails(3, device=d, app="a", mark="2-1.1.0-retry1", rate=0.5) for d in range(200)]
    assert first != retried


def test_the_offline_share_is_chosen_anew_each_period() -> None:
    period0 = {d for d in range(10_000) if offline_in(5, device=d, period=0, share=0.05)}
    period1 = {d for d in range(10_000) if offline_in(5, device=d, period=1, share=0.05)}
    assert 400 < len(period0) < 600
    assert 400 < len(period1) < 600
    assert len(period0 & period1) < 100  # about 5 % of 5 %


def test_no_offline_share_means_always_online_and_a_full_one_never() -> None:
    assert connectivity(1, device=4, elapsed=12.0, share=0.0, period=60) == (False, math.inf)
    assert connectivity(1, device=4, elapsed=12.0, share=1.0, period=60) == (True, math.inf)


@given(
    seed=st.integers(0, 1000),
    device=st.integers(0, 10_000),
    elapsed=st.floats(0, 1e6),
    share=st.floats(0.01, 0.99),
)
def test_connectivity_changes_at_a_period_boundary(seed: int, device: int, elapsed: float, share: float) -> None:
    period = 60.0
    offline, lasting = connectivity(seed, device=device, elapsed=elapsed, share=share, period=period)
    assert offline == offline_in(seed, device=device, period=int(elapsed // period), share=share)
    assert lasting > 0
    if math.isfinite(lasting):
        change = elapsed + lasting
        assert math.isclose(change / period, round(change / period), abs_tol=1e-6)
        after = round(change / period)
        assert offline_in(seed, device=device, period=after, share=share) != offline


def test_spread_stays_within_half_and_one_and_a_half_of_the_mean() -> None:
    values = [spread(2, 10.0, "download", d) for d in range(1000)]
    assert all(5.0 <= v < 15.0 for v in values)
    assert 9.0 < sum(values) / len(values) < 11.0

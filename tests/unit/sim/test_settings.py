"""Connection bounds: one long-poll per device within the file-descriptor limit, shared out by shard."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgefleet.sim.settings import CALL_HEADROOM, FD_RESERVE, SHARD_SIZE, SimSettings, connection_budget, shard_limits


def settings(**values: object) -> SimSettings:
    return SimSettings.model_validate({"hub_url": "https://hub:8443", "token": "efe_x", **values})


def test_each_device_gets_a_connection_plus_headroom_per_shard() -> None:
    assert connection_budget(settings(devices=120), fd_limit=20_000) == 120 + 3 * CALL_HEADROOM


def test_the_budget_stays_within_the_file_descriptor_limit() -> None:
    assert connection_budget(settings(devices=50_000), fd_limit=20_000) == 20_000 - FD_RESERVE
    assert connection_budget(settings(devices=10, max_connections=4), fd_limit=20_000) == 4


def test_shards_share_the_poll_budget_by_size_after_their_call_connections() -> None:
    limits = shard_limits(120, 120 + 3 * CALL_HEADROOM)
    assert limits == [50, 50, 20]  # one long-poll per device
    assert sum(shard_limits(10_000, 5_000)) == 5_000 - 200 * CALL_HEADROOM
    assert shard_limits(1, 1) == [1]  # a poll can always go on
    assert all(limit >= 1 for limit in shard_limits(SHARD_SIZE * 10, 3))


def test_bounds_are_enforced() -> None:
    with pytest.raises(ValidationError):
        settings(devices=0)
    with pytest.raises(ValidationError):
        settings(devices=10, fail_rate=1.5)
    with pytest.raises(ValidationError):
        settings(devices=10, hub_url="hub:8443")

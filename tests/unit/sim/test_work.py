"""The agent's errors cross the process boundary as data that keeps the agent's retry rules."""

from __future__ import annotations

import pickle

from edgefleet.agent.decide import Choices, Installed
from edgefleet.agent.errors import (
    DeviceNotAcceptedError,
    HubRefusedError,
    HubUnreachableError,
    IdentityError,
    UpdateRefusedError,
)
from edgefleet.agent.plan import ServiceTarget
from edgefleet.agent.reconcile import PermissionRefusedError
from edgefleet.sim.engine import SimRelease
from edgefleet.sim.work import Candidate, Failure, Verified, failure_of
from tests.publishing import IMAGE


def test_errors_become_failures_with_the_agents_retry_rules() -> None:
    assert failure_of(HubUnreachableError("down")) == Failure("unreachable", "down", retry=True)
    assert failure_of(UpdateRefusedError("hash_mismatch", "bad bytes")) == Failure(
        "refused", "bad bytes", retry=True, reason="hash_mismatch"
    )
    assert failure_of(UpdateRefusedError("signature", "forged")).retry is False
    assert failure_of(PermissionRefusedError("sensor", [], "")).kind == "permission"
    assert failure_of(HubRefusedError(403, "token_exhausted", "used up")) == Failure(
        "hub-refused", "token_exhausted: used up", retry=False
    )
    assert failure_of(DeviceNotAcceptedError(403, "device_pending", "wait")).retry is True
    assert failure_of(DeviceNotAcceptedError(403, "device_revoked", "gone")).kind == "not-accepted"
    assert failure_of(IdentityError("key unreadable")) == Failure("trouble", "key unreadable", retry=False)
    assert failure_of(OSError(28, "No space left")).retry is True


def test_results_survive_the_trip_between_processes() -> None:
    entry = Installed("1.1.0", 2, "/state/releases/sensor/2-1.1.0", previous="/state/releases/sensor/1-1.0.0")
    result = Verified(
        plan=Choices(update=("sensor",), staying=(), failed={}, removed=()),
        environment={"MODE": "demo"},
        candidates=(
            Candidate(
                "sensor",
                "2-1.1.0",
                SimRelease("1.1.0", 2, (ServiceTarget("sensor", "main", "1.1.0", IMAGE, "definition"),)),
                entry,
            ),
        ),
        failure=Failure("refused", "x", retry=False, reason="signature"),
        requests=4,
    )
    assert pickle.loads(pickle.dumps(result)) == result  # noqa: S301  # our own bytes, as the pool sends them

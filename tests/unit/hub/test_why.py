"""`device why` in words: which deployment owns the device's app, and who last wrote its assignment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edgefleet.hub.db.assignments import _assigned_by
from edgefleet.hub.records import AssignedBy, Deployment
from edgefleet.hub.services.deployments import Reason, explain

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def deployment(name: str, version: str, priority: int = 0) -> Deployment:
    return Deployment(
        id=f"id-{name}",
        name=name,
        app="hello",
        version=version,
        release_counter=1,
        target="fleet=demo",
        priority=priority,
        waves="1,100%",
        bake_seconds=0,
        wave_timeout_seconds=3600,
        max_failure="0%",
        on_failure="pause",
        max_pending=None,
        state="completed",
        wave=1,
        wave_started_at=None,
        bake_started_at=None,
        accepted_failures=0,
        reason=None,
        last_held_at=None,
        revision=1,
        created_by="user:admin",
        created_at=NOW,
        updated_at=NOW,
    )


def reason(assigned: str, by: AssignedBy) -> Reason:
    return Reason(
        app="hello",
        assigned=assigned,
        assigned_by=by,
        deployment=deployment("hello-1", "1.0.0"),
        member="updated",
        wave=0,
        losers=[],
    )


@pytest.mark.parametrize(
    ("assigned", "by", "tail"),
    [
        ("1.0.0", AssignedBy.rollout("hello-1"), "in wave 1 (updated)."),
        ("1.0.0", AssignedBy.rollout("hello-1", rollback=True), "in wave 1 (updated)."),
        (
            "1.0.0",
            AssignedBy.rollout("hello-2", rollback=True),
            "The assignment was last written by deployment:hello-2:rollback, with the same release.",
        ),
        ("0.9.0", AssignedBy.operator("user:admin"), "Since then user:admin assigned hello@0.9.0."),
    ],
)
def test_the_owner_and_whoever_last_wrote_the_assignment_are_both_named(assigned, by, tail):
    text = explain(reason(assigned, by))
    assert text.startswith("Deployment hello-1 (priority 0, target: fleet=demo) selects this device")
    assert text.endswith(tail)


@pytest.mark.parametrize(
    "by",
    [
        AssignedBy.operator("user:admin"),
        AssignedBy.rollout("hello-1"),
        AssignedBy.rollout("hello-1", rollback=True),
        AssignedBy.rollout("has:colons"),
        AssignedBy.rollout("has:colons:rollback", rollback=True),
    ],
)
def test_who_assigned_reads_back_as_it_was_written(by: AssignedBy) -> None:
    """The database keeps it as text (`str`); the store reads it back into its parts (`_assigned_by`)."""
    assert _assigned_by(str(by)) == by

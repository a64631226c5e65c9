"""Two hub processes run the scheduler on one PostgreSQL: one rollout, no device assigned twice, no wave advanced twice.

A trigger, added for the test, counts every write to the assignments table per device, so
a second assignment of any device would show even if it wrote the same values.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from edgefleet.hub.context import Hub
from edgefleet.hub.services import deployments, rollouts
from edgefleet.hub.services.operators import Operator
from tests.conftest import Fleet
from tests.integration.hub.test_deployments import add_devices, assigned, report
from tests.publishing import Publisher

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEDULER = """
import sys, time
from pathlib import Path
from edgefleet.hub.lifecycle import open_hub
from edgefleet.hub.settings import HubSettings
from edgefleet.hub.services import rollouts
hub = open_hub(HubSettings(data_dir=sys.argv[1], database_url=sys.argv[2]), migrate=False)
stop, acted, passes = Path(sys.argv[3]), 0, 0
while not stop.exists():
    acted += rollouts.tick(hub) > 0
    passes += 1
    time.sleep(0.005)
print(acted, passes)
"""

COUNT_WRITES = """
CREATE TABLE assignment_writes (device_id varchar(36), version varchar(64));
CREATE FUNCTION count_assignment_write() RETURNS trigger AS $$
BEGIN INSERT INTO assignment_writes VALUES (NEW.device_id, NEW.version); RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER assignment_writes AFTER INSERT OR UPDATE ON assignments
    FOR EACH ROW EXECUTE FUNCTION count_assignment_write();
"""


@pytest.fixture
def writes_counted(hub: Hub) -> Iterator[None]:
    assert hub.store.dialect == "postgresql"
    with hub.store.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS assignment_writes CASCADE"))
        conn.execute(text("DROP FUNCTION IF EXISTS count_assignment_write CASCADE"))
        conn.exec_driver_sql(COUNT_WRITES)
    yield
    with hub.store.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS assignment_writes CASCADE"))
        conn.execute(text("DROP FUNCTION IF EXISTS count_assignment_write CASCADE"))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_schedulers_run_one_rollout_without_double_assignment(
    fleet: Fleet, tmp_path: Path, hub_keys_dir: Path, writes_counted: None
) -> None:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "2.0.0")
    devices = add_devices(fleet, 200)
    admin = Operator(user="admin", role="admin", token_id="test")
    spec = deployments.make_spec(
        name="twice",
        app="sensor",
        version="2.0.0",
        target="env=prod",
        priority=0,
        waves="1%,10%,30%,60%,100%",
        bake_seconds=0,
        wave_timeout_seconds=3600,
        max_failure="0%",
        on_failure="pause",
    )
    fleet.clock.now = datetime.now(UTC)  # the schedulers use the real clock
    stop = tmp_path / "stop"
    url = fleet.hub.settings.sqlalchemy_url()
    schedulers = [
        subprocess.Popen(
            [sys.executable, "-c", SCHEDULER, str(hub_keys_dir), url, str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        time.sleep(1.0)  # both running before there is anything to do
        with fleet.hub.store.transaction() as tx:  # created without the inline pass: the two processes do it all
            deployments._new(fleet.hub, tx, spec, admin.actor)
        deadline = time.monotonic() + 90
        reported: set[str] = set()
        while True:
            with fleet.hub.store.transaction(readonly=True) as tx:
                state = tx.find_deployment("twice")
            assert state is not None
            if state.state == "completed":
                break
            assert state.state == "active", state.reason
            assert time.monotonic() < deadline, "the rollout did not complete"
            new = [d for d in assigned(fleet) if d not in reported]
            fleet.clock.now = datetime.now(UTC)
            report(fleet, new, "2.0.0")
            reported.update(new)
            time.sleep(0.05)
    finally:
        stop.touch()
        outputs = [p.communicate(timeout=30) for p in schedulers]
    for process, (_out, err) in zip(schedulers, outputs, strict=True):
        assert process.returncode == 0, err
    acted = [int(out.split()[0]) for out, _ in outputs]
    assert sum(acted) >= 5  # five waves, each started by one pass or the other

    with fleet.hub.store.engine.connect() as conn:
        writes = conn.execute(text("SELECT device_id, count(*) FROM assignment_writes GROUP BY device_id")).all()
    assert len(writes) == 200
    assert {count for _, count in writes} == {1}, "a device was assigned more than once"
    with fleet.hub.store.transaction(readonly=True) as tx:
        members = tx.list_members(tx.find_deployment("twice").id)  # type: ignore[union-attr]
        entries = [e for e in tx.list_audit(after=0, limit=10_000) if e.action == "deployment.progress"]
    assert sorted(m.device_id for m in members) == sorted(devices)
    events = [e.detail["event"] for e in entries]
    for wave in range(2, 6):
        assert events.count(f"wave {wave} started") == 1, events
    assert events.count("completed") == 1
    assert rollouts.tick(fleet.hub) == 0  # nothing left to do

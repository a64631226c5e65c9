"""A simulated device's cycle with a fake hub link and worker pool: the agent's outcomes, events and reports."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgefleet import crypto
from edgefleet.agent.bounds import DEFAULT_BOUNDS
from edgefleet.agent.decide import Choices, Installed
from edgefleet.agent.errors import HubUnreachableError
from edgefleet.agent.identity import LocalIdentity
from edgefleet.agent.plan import ServiceTarget
from edgefleet.agent.policy import Policy
from edgefleet.protocol import DeviceEvent, DeviceIdentity, ReportedProperties, TargetState
from edgefleet.sim.device import Shared, SimDevice
from edgefleet.sim.engine import SimRelease
from edgefleet.sim.errors import DeviceOfflineError
from edgefleet.sim.settings import SimSettings
from edgefleet.sim.stats import Counters
from edgefleet.sim.work import Candidate, Failure, Restored, Verified
from tests.publishing import IMAGE

DEVICE = "00000000-0000-4000-8000-000000000001"
NEW_IMAGE = IMAGE.rsplit("@", 1)[0] + "@sha256:" + "e" * 64
OLD = SimRelease("1.0.0", 1, (ServiceTarget("sensor", "main", "1.0.0", IMAGE, "old-definition"),))
NEW = SimRelease("1.1.0", 2, (ServiceTarget("sensor", "main", "1.1.0", NEW_IMAGE, "new-definition"),))


@dataclass
class FakeLink:
    """The hub as the device's link sees it: answers polls from a list, keeps what it is sent."""

    answers: list[TargetState | None] = field(default_factory=list)
    batches: list[tuple[list[dict[str, Any]], int]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    recorded: int = 0

    async def target_state(self, _identity: object, *, wait: float, etag: str | None) -> tuple[Any, str | None]:
        answer = self.answers.pop(0) if self.answers else None
        return answer, '"new"' if answer is not None else etag

    async def events(self, _identity: object, events: list[dict[str, Any]], *, dropped: int) -> int:
        self.batches.append((events, dropped))
        self.recorded = max([self.recorded] + [e["seq"] for e in events])
        return self.recorded

    async def report(self, _identity: object, properties: dict[str, Any]) -> None:
        self.reports.append(properties)


@dataclass
class FakePool:
    """Answers every verification job with `verified`; keeps the jobs."""

    verified: Verified
    jobs: list[Any] = field(default_factory=list)

    async def run(self, _kind: str, _fn: object, job: Any) -> Verified:
        self.jobs.append(job)
        return self.verified


def candidate(tmp_path: Path) -> Candidate:
    entry = Installed("1.1.0", 2, str(tmp_path / "releases/sensor/2-1.1.0"), previous=str(tmp_path / "1-1.0.0"))
    return Candidate(app="sensor", mark="2-1.1.0", release=NEW, entry=entry)


def make_device(tmp_path: Path, verified: Verified, **settings: Any) -> tuple[SimDevice, FakeLink, FakePool]:
    values = {"hub_url": "https://hub:8443", "token": "efe_x", "devices": 1, "offline": 0.0}
    values |= {"download_seconds": 0.0, "start_seconds": 0.0, "poll_wait": 0.0} | settings
    pool = FakePool(verified)
    shared = Shared(
        settings=SimSettings.model_validate(values),
        counters=Counters(),
        work=pool,  # type: ignore[arg-type]
        policy=Policy(),
        started=0.0,
        clock=lambda: 100.0,
    )
    identity = DeviceIdentity(device_id=DEVICE, status="accepted", fleet="lab", ca_bundle="-")
    link = FakeLink(answers=[TargetState(device_id=DEVICE, apps={})])
    restored = Restored(
        apps={"sensor": Installed("1.0.0", 1, str(tmp_path / "1-1.0.0"))},
        failed={},
        environment={},
        running={"sensor": OLD},
    )
    device = SimDevice(
        index=3,
        data_dir=tmp_path,
        identity=LocalIdentity(key=crypto.generate_key(), identity=identity),
        link=link,  # type: ignore[arg-type]
        shared=shared,
        restored=restored,
    )
    return device, link, pool


def plan(update: tuple[str, ...] = ("sensor",)) -> Choices:
    return Choices(update=update, staying=(), failed={}, removed=())


def sent_events(link: FakeLink) -> list[dict[str, Any]]:
    return [event for events, _ in link.batches for event in events]


def test_an_update_that_comes_up_healthy_commits_and_reports_the_new_release(tmp_path: Path) -> None:
    device, link, pool = make_device(tmp_path, Verified(plan=plan(), environment={}, candidates=(candidate(tmp_path),)))
    asyncio.run(device.cycle())
    assert pool.jobs[0].installed["sensor"].version == "1.0.0"
    [committed] = sent_events(link)
    assert DeviceEvent.model_validate(committed).status == "committed"
    assert (committed["from_release"], committed["to_release"], committed["seq"]) == ("1.0.0", "1.1.0", 1)
    assert device.installed["sensor"].version == "1.1.0"
    report = link.reports[-1]
    assert report["apps"]["sensor"]["version"] == "1.1.0"
    assert report["apps"]["sensor"]["services"]["main"]["release"] == "1.1.0"
    assert report["simulator"] == "edgefleet sim"
    assert report["last_error"] is None
    assert json.loads((tmp_path / "installed.json").read_text())["apps"]["sensor"]["version"] == "1.1.0"
    assert device.etag == '"new"'
    assert device.shared.counters.committed == 1


def test_a_failing_update_rolls_back_and_says_so(tmp_path: Path) -> None:
    verified = Verified(plan=plan(), environment={}, candidates=(candidate(tmp_path),))
    device, link, _ = make_device(tmp_path, verified, fail_rate=1.0)
    asyncio.run(device.cycle())
    [failed] = sent_events(link)
    parsed = DeviceEvent.model_validate(failed)
    assert (parsed.status, parsed.service) == ("failed", "main")
    assert (parsed.from_release, parsed.to_release) == ("1.0.0", "1.1.0")
    assert "simulated failure" in (parsed.reason or "")
    assert device.engine.running() == {"sensor": OLD}
    assert device.installed["sensor"].version == "1.0.0"
    assert device.failed == {"sensor": "2-1.1.0"}
    report = link.reports[-1]
    assert report["apps"]["sensor"]["version"] == "1.0.0"
    assert "failed and was rolled back" in report["last_error"]
    assert device.shared.counters.failed == 1


def test_a_refused_verification_changes_nothing_and_is_tried_again_later(tmp_path: Path) -> None:
    refused = Failure("refused", "bytes do not match", retry=True, reason="hash_mismatch")
    device, link, _ = make_device(tmp_path, Verified(plan=plan(), environment={}, failure=refused))
    asyncio.run(device.cycle())
    assert sent_events(link) == []
    assert device.installed["sensor"].version == "1.0.0"
    assert device.last_error == "update refused (hash_mismatch): bytes do not match"
    assert (device.retry, device.retry_at, device.retries) == (True, 130.0, 1)
    assert device.shared.counters.refused == 1
    assert link.reports[-1]["last_error"] == device.last_error


def test_a_hub_lost_during_verification_is_tried_again_after_the_backoff(tmp_path: Path) -> None:
    lost = Failure("unreachable", "hub unreachable: connection refused", retry=True)
    device, _, _ = make_device(tmp_path, Verified(failure=lost))
    with pytest.raises(HubUnreachableError):
        asyncio.run(device.cycle())
    assert (device.retry, device.retry_at, device.etag) == (True, 0.0, None)


def test_a_device_from_an_earlier_run_numbers_its_events_after_what_the_hub_recorded(tmp_path: Path) -> None:
    device, link, _ = make_device(tmp_path, Verified(plan=plan(), environment={}, candidates=(candidate(tmp_path),)))
    device.greet = True
    link.recorded = 17
    asyncio.run(device.cycle())
    assert link.batches[0] == ([], 0)
    assert [e["seq"] for e in sent_events(link)] == [18]


def test_an_offline_device_sends_nothing(tmp_path: Path) -> None:
    device, link, _ = make_device(tmp_path, Verified(), offline=1.0)
    with pytest.raises(DeviceOfflineError):
        asyncio.run(device.cycle())
    asyncio.run(device.report())  # kept for later, not sent
    assert (link.batches, link.reports) == ([], [])
    assert device.outbox.report() is not None


def test_the_summaries_can_tell_where_each_devices_cycle_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    device, link, pool = make_device(tmp_path, Verified(plan=plan(), environment={}, candidates=(candidate(tmp_path),)))
    seen: list[str | None] = []
    poll, verify, events = link.target_state, pool.run, link.events

    async def polled(*args: Any, **kwargs: Any) -> Any:
        seen.append(device.view().step)
        return await poll(*args, **kwargs)

    async def verified(*args: Any) -> Any:
        seen.append(device.view().step)
        return await verify(*args)

    async def delivered(*args: Any, **kwargs: Any) -> Any:
        seen.append(device.view().step)
        return await events(*args, **kwargs)

    monkeypatch.setattr(link, "target_state", polled)
    monkeypatch.setattr(pool, "run", verified)
    monkeypatch.setattr(link, "events", delivered)
    asyncio.run(device.cycle())
    assert seen == ["polling", "verifying", "reporting"]
    assert device.view().step is None


def test_a_device_at_rest_reports_once_and_again_when_its_state_changes_or_ages(tmp_path: Path) -> None:
    """As the agent (`agent.report.report_due`): the same report is not sent again within the refresh."""
    device, link, _ = make_device(tmp_path, Verified())
    now = [100.0]
    device.shared.clock = lambda: now[0]
    asyncio.run(device.report())
    asyncio.run(device.report())
    assert len(link.reports) == 1
    ReportedProperties.model_validate({"properties": link.reports[0]})  # what the hub takes
    device.last_error = "something happened"
    asyncio.run(device.report())
    assert len(link.reports) == 2
    now[0] += DEFAULT_BOUNDS.report_refresh
    asyncio.run(device.report())
    assert len(link.reports) == 3

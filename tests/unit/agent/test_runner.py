"""The runner's logic above the engine: events always acceptable to the outbox and the hub, delivered or
dropped knowingly; an update that cannot be carried out retried with growing delays, never in a loop;
half-verified files dropped at start."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.bounds import DEFAULT_BOUNDS
from edgefleet.agent.engine.info import EngineInfo, api_level, engine_kind
from edgefleet.agent.errors import EngineError, HubRefusedError, HubUnreachableError, UpdateRefusedError
from edgefleet.agent.journal import FORWARD, Journal
from edgefleet.agent.outbox import Outbox, OutboxError
from edgefleet.agent.reconcile import PermissionRefusedError
from edgefleet.agent.runner import (
    Agent,
    Installed,
    LocalState,
    event,
    load_state,
    outcome_event,
    printable,
    run,
    save_state,
)
from edgefleet.protocol import MAX_REASON_CHARS, DeviceEvent, ReportedProperties


def test_printable_strips_nul_and_replaces_invalid_text() -> None:
    assert printable("a\x00b", 10) == "ab"
    assert printable("bad \udcff surrogate", 100) == "bad ? surrogate"


def test_printable_keeps_the_end_of_long_text() -> None:
    assert printable("x" * 10 + "END", 5) == "xxEND"


@given(reason=st.text(max_size=5000), logs=st.text(max_size=20000))
def test_any_reason_and_logs_make_an_event_the_hub_accepts(reason: str, logs: str) -> None:
    body = event(None, "web", "failed", to_release="1.0.0", reason=reason, logs=logs, service="web")
    parsed = DeviceEvent.model_validate(body | {"seq": 1})
    assert len(parsed.reason or "") <= MAX_REASON_CHARS
    assert "\x00" not in (parsed.logs or "")
    assert len(json.dumps(body, sort_keys=True)) <= DEFAULT_BOUNDS.event_bytes


def test_an_event_of_wide_characters_still_fits_the_outbox(tmp_path: Path) -> None:
    body = event(None, "web", "failed", to_release="1.0.0", reason="é" * 5000, logs="\x1b[31mé" * 9000)
    assert len(json.dumps(body, sort_keys=True)) <= DEFAULT_BOUNDS.event_bytes
    assert body["logs"].endswith("\x1b[31mé")  # the newest lines are the ones kept
    Outbox(tmp_path / "outbox.db").add(body)


class FakeHub:
    """The two calls deliver() makes; refuses event batches with `refusal` while it is set."""

    def __init__(self) -> None:
        self.refusal: HubRefusedError | None = None
        self.report_refusal: HubRefusedError | None = None
        self.batches: list[tuple[list[int], int]] = []
        self.reports: list[object] = []
        self.target: dict[str, bool] | None = {"changed": True}

    def events(self, _identity: object, events: list[dict[str, Any]], *, dropped: int) -> int:
        if self.refusal is not None:
            raise self.refusal
        self.batches.append(([e["seq"] for e in events], dropped))
        return int(events[-1]["seq"]) if events else 0

    def report(self, _identity: object, properties: object) -> None:
        if self.report_refusal is not None:
            raise self.report_refusal
        ReportedProperties.model_validate({"properties": properties})  # what the hub takes, and nothing else
        self.reports.append(properties)

    def target_state(self, _identity: object, *, wait: float, etag: str | None) -> tuple[object, str]:
        changed, self.target = self.target, None
        return changed, "etag-1"


class OfflineAgent(Agent):
    """An agent whose update always meets `trouble` (None: it goes well); nothing else touches an engine."""

    updates: list[float]
    trouble: Exception | None = EngineError("the engine is not answering")

    def update(self) -> None:
        self.updates.append(self.clock())
        if self.trouble is not None:
            raise self.trouble

    def apply(self) -> int:
        return 0

    def report(self) -> None:
        pass

    renewals = 0
    renewal_trouble: Exception | None = None

    def renew(self) -> None:  # no identity here (renewal itself: tests/integration/hub/test_authorization.py)
        self.renewals += 1
        if self.renewal_trouble is not None:
            raise self.renewal_trouble


def agent(tmp_path: Path, hub: FakeHub, now: list[float]) -> OfflineAgent:
    made = OfflineAgent(
        client=cast(Any, hub),
        identity=cast(Any, None),
        engine=cast(Any, None),
        data_dir=tmp_path,
        policy=cast(Any, None),
        arch="amd64",
        clock=lambda: now[0],
    )
    made.updates = []
    return made


def test_a_batch_the_hub_refuses_for_good_is_dropped_and_counted(tmp_path: Path) -> None:
    hub = FakeHub()
    device = agent(tmp_path, hub, [0.0])
    for n in range(3):
        device.outbox.add(event(None, f"app{n}", "committed", to_release="1.0.0"))
    hub.refusal = HubRefusedError(401, "certificate_expired", "renew")  # not the batch's fault: kept
    device.deliver()
    assert len(device.outbox.pending().events) == 3
    hub.refusal = HubRefusedError(422, "invalid_request", "bad event")  # the batch's fault: dropped, counted
    device.deliver()
    assert device.outbox.pending().events == ()
    device.outbox.add(event(None, "later", "committed", to_release="1.0.0"))
    hub.refusal = None
    device.deliver()
    assert hub.batches == [([4], 3)]  # the hub hears that three events were lost


def test_an_update_that_meets_engine_trouble_is_retried_less_and_less_often(tmp_path: Path) -> None:
    now = [0.0]
    device = agent(tmp_path, FakeHub(), now)
    for t in range(0, 200):  # one cycle a second (a long poll that answers at once)
        now[0] = float(t)
        device.cycle()
    assert device.updates == [0.0, 30.0, 90.0]  # 30 s, then 60 s apart (120 s next): never a tight loop
    assert device.last_error is not None
    assert "engine is not answering" in device.last_error


@pytest.mark.parametrize(
    ("reason", "tries"),
    [
        ("hash_mismatch", [0.0, 30.0, 90.0]),
        ("rollback_attack", [0.0, 30.0, 90.0]),  # fast-forwarded: the hub's key rotation cures it
        ("expired", [0.0, 30.0, 90.0]),
        ("signature", [0.0]),
    ],
)
def test_a_damaged_download_is_fetched_again_later_but_a_forgery_is_not(
    tmp_path: Path, reason: str, tries: list[float]
) -> None:
    now = [0.0]
    device = agent(tmp_path, FakeHub(), now)
    device.trouble = UpdateRefusedError(reason, "the bytes do not match what was signed")
    for t in range(0, 200):
        now[0] = float(t)
        device.cycle()
    assert device.updates == tries
    assert device.last_error is not None
    assert f"update refused ({reason})" in device.last_error


def test_a_report_the_hub_refuses_for_good_is_dropped_and_the_agent_goes_on(tmp_path: Path) -> None:
    hub = FakeHub()
    device = agent(tmp_path, hub, [0.0])
    device.outbox.keep_report({"apps": {"x" * 10: "too big, say"}})
    hub.report_refusal = HubRefusedError(403, "device_pending", "not accepted yet")
    device.deliver()
    assert device.outbox.report() is not None  # kept for later
    hub.report_refusal = HubRefusedError(400, "reported_too_large", "over 16 KiB")
    device.deliver()
    assert device.outbox.report() is None  # dropped: sending it again would never succeed
    hub.report_refusal = None
    device.outbox.keep_report({"apps": {}})
    device.deliver()
    assert hub.reports == [{"apps": {}}]


def test_an_unusable_outbox_does_not_stop_polling_and_updating(tmp_path: Path) -> None:
    device = agent(tmp_path, FakeHub(), [0.0])
    device.outbox.close()  # any SQLite failure: a full disk, a damaged file
    with pytest.raises(OutboxError):
        device.outbox.pending()
    device.cycle()
    assert device.updates == [0.0]


def test_recovery_drops_files_a_crash_left_half_verified(tmp_path: Path) -> None:
    staging = tmp_path / "releases" / "web" / ".staging-3-1.2.0-abcd"
    staging.mkdir(parents=True)
    (staging / "compose.yaml").write_text("half")
    installed = tmp_path / "releases" / "web" / "2-1.1.0"
    installed.mkdir()
    agent(tmp_path, FakeHub(), [0.0]).recover()
    assert not staging.exists()
    assert installed.exists()


class AwayEngine:
    """An engine whose API does not answer."""

    def __init__(self) -> None:
        self.bundles: dict[str, Path] = {}

    def status(self) -> dict[str, Any]:
        raise EngineError("cannot reach the engine: connection refused")

    def identify(self) -> Any:
        raise EngineError("cannot reach the engine: connection refused")


def test_a_report_while_the_engine_is_away_says_so_instead_of_stopping_the_agent(tmp_path: Path) -> None:
    hub = FakeHub()
    device = Agent(
        client=cast(Any, hub),
        identity=cast(Any, None),
        engine=cast(Any, AwayEngine()),
        data_dir=tmp_path,
        policy=cast(Any, None),
        arch="amd64",
    )
    device.report()
    (sent,) = hub.reports
    assert cast(dict[str, Any], sent)["last_error"] == "engine: cannot reach the engine: connection refused"
    assert "engine" not in cast(dict[str, Any], sent)  # unknown now: the twin keeps what it said last


class SteadyEngine(AwayEngine):
    """An engine that answers, the same each time until `services` changes."""

    def __init__(self) -> None:
        super().__init__()
        self.services: dict[str, Any] = {"main": {"state": "running", "health": None, "restarts": 0}}

    def status(self) -> dict[str, Any]:
        return {"web": self.services}

    def identify(self) -> Any:
        return EngineInfo("podman", "4.3.1", "1.41", "/var/lib/containers/storage")


def steady_agent(tmp_path: Path, hub: FakeHub, engine: SteadyEngine, now: list[float]) -> Agent:
    """An agent whose reports go to `hub`, on an engine that answers, at the time `now[0]`."""
    return Agent(
        client=cast(Any, hub),
        identity=cast(Any, None),
        engine=cast(Any, engine),
        data_dir=tmp_path,
        policy=cast(Any, None),
        arch="amd64",
        clock=lambda: now[0],
    )


def test_an_agent_at_rest_sends_its_report_once_and_again_when_it_changes_or_ages(tmp_path: Path) -> None:
    hub, engine, now = FakeHub(), SteadyEngine(), [0.0]
    device = steady_agent(tmp_path, hub, engine, now)
    for now[0] in (0.0, 60.0, 120.0):
        device.report()
    assert len(hub.reports) == 1  # the first; then the same again is not sent
    assert device.outbox.report() is None  # nor kept: nothing written to the device's storage
    engine.services = {"main": {"state": "restarting", "health": None, "restarts": 1}}
    now[0] = 180.0
    device.report()
    assert len(hub.reports) == 2
    now[0] = 180.0 + DEFAULT_BOUNDS.report_refresh
    device.report()
    assert len(hub.reports) == 3  # unchanged, but the twin's figures are never older than the refresh


def test_a_report_the_hub_did_not_take_is_sent_again_though_unchanged(tmp_path: Path) -> None:
    hub, now = FakeHub(), [0.0]
    device = steady_agent(tmp_path, hub, SteadyEngine(), now)
    hub.report_refusal = HubRefusedError(503, "unavailable", "try later")
    device.report()
    hub.report_refusal = None
    now[0] = 60.0
    device.report()
    assert len(hub.reports) == 1


def test_a_report_left_waiting_never_goes_out_after_the_state_it_described_passed(tmp_path: Path) -> None:
    """The hub took A; B was refused for now; the device is back at A: the hub must end with A, not B."""
    hub, engine, now = FakeHub(), SteadyEngine(), [0.0]
    device = steady_agent(tmp_path, hub, engine, now)
    device.report()  # A, taken
    steady = engine.services
    engine.services = {"main": {"state": "restarting", "health": None, "restarts": 1}}
    hub.report_refusal = HubRefusedError(503, "unavailable", "try later")
    now[0] = 60.0
    device.report()  # B, kept
    hub.report_refusal, engine.services = None, steady
    now[0] = 120.0
    device.report()  # A again
    assert cast(dict[str, Any], hub.reports[-1])["apps"]["web"]["services"]["main"]["state"] == "running"
    assert device.outbox.report() is None


def test_every_cycle_starts_by_renewing_the_certificate_and_an_unreachable_hub_there_means_back_off(
    tmp_path: Path,
) -> None:
    device = agent(tmp_path, FakeHub(), [0.0])
    device.cycle()
    device.cycle()
    assert device.renewals == 2
    device.renewal_trouble = HubUnreachableError("connection refused")
    slept: list[float] = []
    run(device, initial=1.0, ceiling=8.0, sleep=slept.append, stop=lambda: len(slept) >= 2)
    assert device.renewals == 4
    assert len(slept) == 2  # backed off twice, as for any unreachable hub


def test_an_engine_error_is_cleared_once_the_engine_answers_again(tmp_path: Path) -> None:
    hub = FakeHub()
    hub.target = None  # nothing new to install: only reconcile and report
    device = agent(tmp_path, hub, [0.0])
    device.last_error = "engine: cannot reach the engine: connection refused"
    device.cycle()
    assert device.last_error is None
    device.last_error = "update refused (signature): bad"
    device.cycle()
    assert device.last_error == "update refused (signature): bad"  # not the engine's: kept


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ({"Components": [{"Name": "Engine"}, {"Name": "containerd"}], "Platform": {"Name": ""}}, "docker"),
        ({"Components": [{"Name": "Podman Engine"}], "Platform": {"Name": "linux/amd64/debian-12"}}, "podman"),
        ({"Components": [{"Name": "Engine"}], "Platform": {"Name": "balenaEngine"}}, "balena-engine"),
        ({"Components": None}, "docker"),
        ({}, "docker"),
    ],
)
def test_the_engine_is_told_by_its_own_version_answer(answer: dict[str, Any], kind: str) -> None:
    assert engine_kind(answer) == kind


def test_api_levels_compare_as_numbers() -> None:
    assert api_level("1.41") > api_level("1.9") > api_level("1.4")
    assert api_level("junk") < api_level("1.0")


def kept_release(directory: Path, app: str, version: str, image: str, *, bundled: bool) -> str:
    """An installed release's directory as the agent keeps it: compose.yaml and, when bundled, its archive."""
    (directory / "images").mkdir(parents=True)
    (directory / "compose.yaml").write_text(f"""
services:
  main:
    image: {image}
x-edgefleet:
  app: {app}
  version: {version}
  services:
    main: {{resources: {{memory: 32m, cpus: 0.25, pids: 32}}}}
""")
    if bundled:
        (directory / "images" / f"sha256-{image.rsplit(':', 1)[1]}.tar").write_bytes(b"archive")
    return str(directory)


def test_the_bundles_of_previous_releases_are_known_too(tmp_path: Path) -> None:
    # Docker Engine knows an image it loaded only through its bundle, and the previous release keeps its images.
    old, new, other = ("registry.example/a@sha256:" + c * 64 for c in "123")
    state = LocalState(
        apps={
            "a": Installed(
                "2.0.0",
                2,
                kept_release(tmp_path / "a2", "a", "2.0.0", new, bundled=True),
                previous=kept_release(tmp_path / "a1", "a", "1.0.0", old, bundled=True),
            ),
            "b": Installed(
                "1.0.0",
                1,
                kept_release(tmp_path / "b1", "b", "1.0.0", other, bundled=False),
                previous=str(tmp_path / "gone"),  # pruned meanwhile: nothing of it counts
            ),
        }
    )
    assert state.bundles() == {
        old: tmp_path / "a1" / "images" / f"sha256-{'1' * 64}.tar",
        new: tmp_path / "a2" / "images" / f"sha256-{'2' * 64}.tar",
    }


def test_recovery_settles_what_ended_before_the_crash_once(tmp_path: Path) -> None:
    """A transaction that committed (or was judged failed) before the kill: its bookkeeping is done at start, once."""
    hour = timedelta(hours=1)
    journal = Journal(tmp_path / "journal.db")
    directory = tmp_path / "releases" / "web" / "2-1.1.0"
    directory.mkdir(parents=True)
    install = {"version": "1.1.0", "release_counter": 2, "directory": str(directory), "previous": None}
    detail = {"mark": "2-1.1.0", "install": install}
    committed = journal.begin(
        "web", from_release="1.0.0", to_release="1.1.0", strategy="hand-over", timeout=hour, detail=detail
    )
    for phase in FORWARD[1:]:
        committed = journal.advance(committed, phase, timeout=hour)
    failing = journal.begin(
        "db", from_release="1.0.0", to_release="1.2.0", strategy="hand-over", timeout=hour, detail={"mark": "3-1.2.0"}
    )
    judged = {"outcome": "failed", "service": "db", "logs": "boom"}
    journal.advance(failing, "rolling-back", timeout=hour, error="db: exited with code 3", detail=judged)
    journal.close()

    def killed(phase: str) -> None:
        if phase == "settling":
            raise Killed

    first = agent(tmp_path, FakeHub(), [0.0])
    first.engine, first.fault = cast(Any, RollbackEngine()), killed
    with pytest.raises(Killed):  # killed between the first settled transaction's bookkeeping and its mark
        first.recover()
    save_state(tmp_path, replace(load_state(tmp_path), etag='"before-the-update"'))
    device = agent(tmp_path, FakeHub(), [0.0])
    device.engine = cast(Any, RollbackEngine())
    assert device.etag == '"before-the-update"'
    device.recover()
    assert device.etag is None  # what it runs changed since that target: its next poll asks afresh

    state = load_state(tmp_path)
    assert state.apps["web"] == Installed(**install)
    assert state.failed == {"db": "3-1.2.0"}
    assert device.journal.floor("web") == 2
    told = [body for _, body in device.outbox.pending().events]
    assert [(e["app"], e["status"]) for e in told] == [("web", "committed"), ("db", "failed")]  # once each
    assert told[1]["reason"] == "db: exited with code 3 (its rollback was interrupted while rolling-back)"
    assert (told[1]["service"], told[1]["logs"]) == ("db", "boom")
    assert device.journal.unsettled() == []


class Killed(BaseException):
    """The agent's process ending where the fault hook is called."""


class RollbackEngine:
    """An engine with nothing of the app's: a rollback finds nothing to remove or start."""

    def __init__(self) -> None:
        self.bundles: dict[str, Path] = {}

    def ids(self, app: str) -> dict[tuple[str, str], str]:
        return {}

    def remove_image(self, image: str) -> bool:
        return False


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("committed", "committed"), ("failed", "failed"), ("retry", "rolled-back"), ("interrupted", "interrupted")],
)
def test_each_way_a_transaction_ends_is_one_event(tmp_path: Path, outcome: str, status: str) -> None:
    journal = Journal(tmp_path / "journal.db")
    tx = journal.begin("web", from_release="1.0.0", to_release="1.1.0", strategy="hand-over", timeout=timedelta(1))
    if outcome == "committed":
        for phase in FORWARD[1:]:
            tx = journal.advance(tx, phase, timeout=timedelta(1))
    else:
        tx = journal.advance(tx, "rolling-back", timeout=timedelta(1), error="why", detail={"outcome": outcome})
        tx = journal.advance(tx, "rolled-back")
    told = outcome_event(tx)
    assert (told["status"], told["from_release"], told["to_release"]) == (status, "1.0.0", "1.1.0")
    assert told.get("reason") == (None if outcome == "committed" else "why")
    DeviceEvent.model_validate(told | {"seq": 1})


class PollingHub(FakeHub):
    """Answers polls as the hub does: changed while the agent's ETag is not the current one, else 304."""

    def __init__(self) -> None:
        super().__init__()
        self.current = '"t1"'
        self.asked: list[str | None] = []

    def target_state(self, _identity: object, *, wait: float, etag: str | None) -> tuple[object, str]:
        self.asked.append(etag)
        return (None if etag == self.current else {"changed": True}), self.current


@pytest.mark.parametrize(
    ("trouble", "kept"),
    [
        (None, True),  # processed to its end: a restart verifies nothing while it is unchanged
        (EngineError("the engine is not answering"), False),  # to be tried again
        (PermissionRefusedError("web", [], "needs a permission"), False),  # the policy may grant it by then
        (UpdateRefusedError("signature", "not signed"), False),
    ],
    ids=["done", "engine", "permission", "refused"],
)
def test_a_restarted_agent_polls_with_the_target_it_fully_processed(
    tmp_path: Path, trouble: Exception | None, kept: bool
) -> None:
    hub, now = PollingHub(), [0.0]
    first = agent(tmp_path, hub, now)
    first.trouble = trouble
    first.cycle()
    assert load_state(tmp_path).etag == ('"t1"' if kept else None)

    again = agent(tmp_path, hub, now)  # the agent restarted (a reboot): same data dir
    again.cycle()
    assert hub.asked == [None, '"t1"' if kept else None]
    assert again.updates == ([] if kept else [0.0])  # unchanged: no verification at all


def test_a_stored_etag_that_is_not_an_entity_tag_is_ignored(tmp_path: Path) -> None:
    save_state(tmp_path, LocalState(etag='"t1"'))
    assert load_state(tmp_path).etag == '"t1"'
    for bad in ('"t1"\r\nX-Injected: 1', "t1", '""', '"' + "a" * 200 + '"', 7):
        body = json.loads((tmp_path / "installed.json").read_text()) | {"etag": bad}
        (tmp_path / "installed.json").write_text(json.dumps(body))
        assert load_state(tmp_path).etag is None


def test_a_full_disk_when_keeping_the_etag_does_not_stop_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, now = PollingHub(), [0.0]
    device = agent(tmp_path, hub, now)
    device.trouble = None

    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("edgefleet.agent.runner.save_state", full)
    device.cycle()  # logged, not raised
    assert device.etag == '"t1"'  # kept in memory: the next polls are 304
    device.cycle()
    assert hub.asked == [None, '"t1"']


class OddEngine(SteadyEngine):
    """An engine whose version answer holds what no report may (a NUL), and containers of 70 apps."""

    def status(self) -> dict[str, Any]:
        return {f"app{n:02d}": self.services for n in range(70)}

    def identify(self) -> Any:
        return EngineInfo("docker", "24.0\x00evil", "1.43", "/var/lib/docker")


def test_what_the_hub_would_refuse_is_left_out_of_a_report_not_the_whole_report(tmp_path: Path) -> None:
    hub = FakeHub()
    device = steady_agent(tmp_path, hub, OddEngine(), [0.0])
    device.report()
    (sent,) = hub.reports  # validated as the hub validates it (FakeHub.report)
    assert "engine" not in cast(dict[str, Any], sent)
    assert len(cast(dict[str, Any], sent)["apps"]) == 64

"""The typed device wire: the reported state every agent release sends, and the update events it records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edgefleet.agent.decide import Installed
from edgefleet.agent.report import app_reports
from edgefleet.protocol import (
    MAX_REPORTED_BYTES,
    AppReport,
    DeviceEvent,
    ReportedProperties,
    ReportedState,
    UpdateEvent,
)

GOLDEN = sorted((Path(__file__).parents[1] / "golden").glob("agent-*.json"))
DIGEST = "sha256:" + "ab" * 32

# What an agent of 0.1.0 reported for a device running one app (its `Agent.report`, `DockerEngine.status`):
# every key the schema knows then, services with no health, a health, and the image as the engine names it.
OLD_AGENT_REPORT: dict[str, Any] = {
    "apps": {
        "sensor": {
            "version": "1.0.0",
            "release_counter": 3,
            "services": {
                "main": {"state": "running", "health": None, "restarts": 0, "release": "1.0.0", "image": DIGEST},
                "db": {"state": "exited", "health": "unhealthy", "restarts": 5, "release": "1.0.0", "image": None},
            },
        },
        "gone": {"services": {"main": {"state": "created", "health": None, "restarts": 0, "release": None}}},
    },
    "agent_version": "0.1.0",
    "os": "Linux 6.1.0-28-arm64",
    "arch": "arm64",
    "disk_free": 82507821056,
    "mem_available": None,
    "last_error": "engine: the engine did not answer",
}


def test_every_recorded_agent_release_reports_what_the_schema_takes() -> None:
    reports = [
        json.loads(exchange["body"])
        for golden in GOLDEN
        for exchange in json.loads(golden.read_text())["exchanges"]
        if exchange.get("path", "").endswith("/twin/reported")
    ]
    assert reports, "the golden files hold state reports"
    for body in [*reports, {"properties": OLD_AGENT_REPORT}]:
        assert ReportedProperties.model_validate(body).properties.patch() == body["properties"]


def test_a_report_is_a_patch_null_deletes_and_what_is_left_out_stays() -> None:
    assert ReportedState.model_validate({"os": "x", "last_error": None}).patch() == {"os": "x", "last_error": None}
    assert ReportedState.model_validate({}).patch() == {}


@pytest.mark.parametrize(
    "properties",
    [
        {"site": "a"},  # not a key of the reported state
        {"disk_free": True},  # JSON true is not a number
        {"disk_free": -1},
        {"disk_free": 1.5},
        {"arch": "vax"},
        {"os": "x" * 65},
        {"os": "a\x00b"},
        {"last_error": "e" * 2001},
        {"last_error": {"app": "a"}},
        {"repository_root": "trusted"},
        {"apps": {"Bad App": {}}},
        {"apps": {"a": {"version": "not a version"}}},
        {"apps": {"a": {"services": {"main": {"health": None}}}}},  # a service has a state
        {"apps": {"a": {"services": {"main": {"state": "running", "cpu": 1}}}}},
        {"apps": {f"a{i}": {} for i in range(65)}},
        {"engine": {"kind": "docker"}},
    ],
)
def test_what_the_schema_refuses(properties: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReportedProperties.model_validate(json.loads(json.dumps({"properties": properties})))


def test_the_largest_report_a_device_can_make_is_bounded_by_its_fields() -> None:
    """Each field is bounded; the merged twin's size is bounded by the hub (`MAX_REPORTED_BYTES`) on top."""
    service = {"state": "s" * 64, "health": "h" * 64, "restarts": 2**63 - 1, "release": "r" * 64, "image": "i" * 512}
    apps = {f"app{i}": {"services": {f"s{j}": service for j in range(64)}} for i in range(64)}
    size = len(json.dumps(ReportedState.model_validate({"apps": apps}).patch()))
    assert MAX_REPORTED_BYTES < size < 4 * 1024 * 1024  # the hub refuses it whole; parsing it stays cheap


def test_the_agent_leaves_out_containers_whose_labels_name_no_app_or_service() -> None:
    running = {"state": "running", "health": None, "restarts": 0, "release": "1.0.0", "image": DIGEST}
    services = {"web": {"main": running, "": running, "Bad": running}, "": {"main": running}, "db": {"x": {}}}
    installed = {"web": Installed("1.0.0", 4, "/var/lib/edgefleet/releases/web/1.0.0")}
    reports = app_reports(installed, services)
    state = ReportedState.model_validate({"apps": reports})
    assert state.patch()["apps"] == {
        "db": {},
        "web": {"version": "1.0.0", "release_counter": 4, "services": {"main": running}},
    }


def test_a_well_formed_app_is_checked_once_per_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each app is checked whole; only an app that fails is checked service by service (an idle agent reports often)."""
    running = {"state": "running", "health": None, "restarts": 0, "release": "1.0.0", "image": DIGEST}
    checked: list[Any] = []

    class Counting:
        @staticmethod
        def model_validate(value: Any) -> AppReport:
            checked.append(value)
            return AppReport.model_validate(value)

    monkeypatch.setattr("edgefleet.agent.report.AppReport", Counting)
    installed = {"web": Installed("1.0.0", 4, "/var/lib/edgefleet/releases/web/1.0.0")}
    app_reports(installed, {"web": {"main": running, "side": running}, "db": {"x": running}})
    assert len(checked) == 2


def test_an_update_event_is_a_device_event_without_its_number() -> None:
    body = UpdateEvent.model_validate(
        {"at": "2026-12-06T10:00:00+00:00", "app": "web", "status": "committed", "to_release": "1.0.0"}
    ).model_dump(mode="json", exclude_none=True)
    assert DeviceEvent.model_validate(body | {"seq": 1}).app == "web"
    with pytest.raises(ValidationError):
        DeviceEvent.model_validate(body)  # the outbox numbers it

"""Long-polling `device/self`: held until the identity changes, and never longer than the hub's bound."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from fastapi.testclient import TestClient

from edgefleet.hub.api.app import create_app

pytestmark = pytest.mark.integration


def self_with_etag(fleet, device, **params):
    return fleet.device_call(device, "GET", "/device/self", params=params)


def test_unchanged_identity_answers_304_after_the_wait(fleet):
    device = fleet.enroll()
    first = self_with_etag(fleet, device)
    etag = first.headers["etag"]
    started = time.monotonic()
    held = fleet.api.get(
        "/api/v1/device/self",
        params={"wait": 1},
        headers={"Authorization": f"Bearer {device.token(now=fleet.clock())}", "If-None-Match": etag},
    )
    assert held.status_code == 304
    assert 0.9 <= time.monotonic() - started < 5
    stale = fleet.api.get(
        "/api/v1/device/self",
        headers={"Authorization": f"Bearer {device.token(now=fleet.clock())}", "If-None-Match": '"other"'},
    )
    assert stale.status_code == 200


def test_wait_is_capped_by_the_hub_setting(fleet):
    device = fleet.enroll()
    etag = self_with_etag(fleet, device).headers["etag"]
    bounded = dataclasses.replace(
        fleet.hub, settings=fleet.hub.settings.model_copy(update={"long_poll_max_seconds": 0.5})
    )
    api = TestClient(create_app(bounded))
    started = time.monotonic()
    held = api.get(
        "/api/v1/device/self",
        params={"wait": 3600},
        headers={"Authorization": f"Bearer {device.token(now=fleet.clock())}", "If-None-Match": etag},
    )
    assert held.status_code == 304
    assert time.monotonic() - started < 3
    too_long = api.get(
        "/api/v1/device/self",
        params={"wait": 3601},
        headers={"Authorization": f"Bearer {device.token(now=fleet.clock())}"},
    )
    assert too_long.status_code == 422


def test_pending_device_learns_of_its_acceptance_during_the_wait(fleet):
    device = fleet.enroll(fleet.enrollment_token(require_approval=True))
    etag = self_with_etag(fleet, device).headers["etag"]
    answers = []

    def poll():
        answers.append(
            fleet.api.get(
                "/api/v1/device/self",
                params={"wait": 20},
                headers={"Authorization": f"Bearer {device.token(now=fleet.clock())}", "If-None-Match": etag},
            )
        )

    waiter = threading.Thread(target=poll)
    started = time.monotonic()
    waiter.start()
    time.sleep(0.5)
    assert fleet.call("POST", f"/devices/{device.device_id}/accept").status_code == 200
    waiter.join(timeout=15)
    assert time.monotonic() - started < 10
    assert answers[0].status_code == 200
    assert answers[0].json()["status"] == "accepted"
    assert answers[0].json()["certificate"]
    assert answers[0].headers["etag"] != etag

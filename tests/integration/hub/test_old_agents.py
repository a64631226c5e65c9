"""Devices in the field run old agents: the hub answers each recorded agent release's device requests as it did.

Each `tests/golden/agent-*.json` holds what one agent release sent on the device API
(recorded by `tests/golden/record_agent.py` with that release's own code): enrollment,
polls (full and conditional), state reports, an event batch, a certificate renewal. Here
they are sent again, in order, to this hub: signed with the recorded device key and tokens
of the recorded shape, the enrollment token, device ID and ETag this hub gave. Every answer
must have the recorded status, and every body must still parse as that release's models do
(their JSON schemas are recorded too: a new field an old agent's strict model refuses fails
here).
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefleet import crypto
from tests.conftest import Fleet, auth
from tests.publishing import Publisher

GOLDEN = sorted((Path(__file__).parents[2] / "golden").glob("agent-*.json"))
ANSWERS = [
    (re.compile(r"^/api/v1/(enroll|device/self|device/certificate)$"), "DeviceIdentity"),
    (re.compile(r"^/api/v1/device/target$"), "TargetState"),
    (re.compile(r"^/api/v1/device/events$"), "EventsAck"),
]


def token_like(shape: dict[str, Any], key: crypto.PrivateKey, *, device_id: str, now: datetime) -> str:
    """A fresh token with the claims the recorded agent put in its own (a claim it lacked stays out)."""
    issued = int(now.timestamp())
    claims = {
        "sub": device_id,
        "aud": shape["aud"],
        "iat": issued,
        "exp": issued + shape["lifetime"],
        "jti": secrets.token_hex(8),
    }
    unknown = set(shape["claims"]) - set(claims)
    assert not unknown, f"the recorded agent's tokens carry claims this test cannot make: {unknown}"
    algorithm = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    return jwt.encode({k: v for k, v in claims.items() if k in shape["claims"]}, key, algorithm=algorithm)


def model_of(path: str) -> str | None:
    return next((name for pattern, name in ANSWERS if pattern.match(path)), None)


@pytest.mark.parametrize("golden", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_an_old_agents_requests_are_answered_as_before(fleet: Fleet, tmp_path: Path, golden: Path) -> None:
    recorded: dict[str, Any] = json.loads(golden.read_text())
    key = crypto.load_private_key(recorded["device_key"].encode())
    Publisher.create(fleet, tmp_path).publish("golden", "1.0.0")
    values = {"enrollment_token": fleet.enrollment_token(fleet="golden")}
    schemas = recorded["response_schemas"]

    def fill(text: str) -> str:
        for name, value in values.items():
            text = text.replace("{" + name + "}", value)
        return text

    for step, exchange in enumerate(recorded["exchanges"]):
        if "operator" in exchange:
            assert exchange["operator"] == "assign"
            body = {"app": exchange["app"], "version": exchange["version"]}
            assert fleet.call("POST", f"/devices/{values['device']}/assignments", json=body).status_code == 200
            continue
        headers = {name: fill(value) for name, value in exchange["headers"].items()}
        if exchange["token"] is not None:
            headers |= auth(token_like(exchange["token"], key, device_id=values["device"], now=fleet.clock()))
        path, query = fill(exchange["path"]), fill(exchange["query"])
        answer = fleet.api.request(
            exchange["method"],
            path + (f"?{query}" if query else ""),
            headers=headers,
            content=None if exchange["body"] is None else fill(exchange["body"]).encode(),
        )
        where = f"{golden.name} #{step} {exchange['method']} {exchange['path']}"
        assert answer.status_code == exchange["status"], f"{where}: {answer.status_code} {answer.text[:300]}"
        model = model_of(path)
        if answer.status_code == 200 or answer.status_code == 201:
            if model is not None:
                errors = [e.message for e in jsonschema_rs.validator_for(schemas[model]).iter_errors(answer.json())]
                assert errors == [], f"{where}: the recorded agent's {model} refuses the answer: {errors}"
            if "etag" in answer.headers:
                values["etag"] = answer.headers["etag"]
        if path == "/api/v1/enroll":
            values["device"] = answer.json()["device_id"]

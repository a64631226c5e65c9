"""Record what an agent release sends the hub on its device API, as a golden file for `test_old_agents.py`.

Run it with the source tree of the agent release to record first on the path, so that
release's agent (and hub) code is what runs:

    git worktree add /tmp/agent-REV REV
    PYTHONPATH=/tmp/agent-REV/src:/tmp/agent-REV .venv/bin/python tests/golden/record_agent.py \\
        --rev REV --out tests/golden/agent-VERSION-REV.json

It runs that release's hub in-process, publishes and assigns a release over the operator
API, and lets that release's `Agent` (its real loop, on an engine that runs nothing) enroll,
poll, verify, report, deliver an event and renew its certificate. Every request the agent
sends on the device API is kept (TUF metadata and artifact downloads are TUF's protocol,
checked by the conformance suite, and are left out): method, path and query, the headers
that matter, the body, the claims shape of its token, and the status the hub answered; with
the JSON schema of each answer's model as that release parses it. Where an operator acted
(the assignment), an entry says so, for the replay to do the same there. The device's key, made
for the recording, is kept too, so the replay can sign as that device did.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from fastapi.testclient import TestClient

from edgefleet import __version__
from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll, renew_if_due
from edgefleet.agent.identity import KEY_FILE
from edgefleet.agent.plan import Observed
from edgefleet.agent.policy import Policy
from edgefleet.agent.runner import Agent, event, trust_store
from edgefleet.hub.api.app import create_app
from edgefleet.hub.context import Hub
from edgefleet.hub.datadir import init_data_dir, load_keys
from edgefleet.hub.db import Store
from edgefleet.hub.db.migrate import upgrade
from edgefleet.hub.services.operators import bootstrap_admin
from edgefleet.hub.settings import HubSettings
from edgefleet.protocol import DeviceIdentity, EventsAck, TargetState

DEVICE_API = re.compile(r"^/api/v1/(enroll|device/|devices/[^/]+/twin)")
KEPT_HEADERS = ("content-type", "if-none-match")
MODELS = {"DeviceIdentity": DeviceIdentity, "TargetState": TargetState, "EventsAck": EventsAck}


class StubEngine:
    """An engine that runs nothing: the recording is about the hub's API, not containers."""

    bundles: dict[str, Path] = {}  # noqa: RUF012  # the agent's engines carry this attribute

    def observe(self, images: frozenset[str] = frozenset()) -> Observed:
        return Observed()

    def execute(self, step: object, specs: object) -> None:
        raise AssertionError(f"nothing is deployed in a recording: {step}")

    def status(self) -> dict[str, Any]:
        return {}

    def remove_image(self, image: str) -> bool:
        return False


@dataclass
class Recorder:
    """Keeps each device-API exchange the agent's HTTP client makes."""

    exchanges: list[dict[str, Any]] = field(default_factory=list)
    substitutions: dict[str, str] = field(default_factory=dict)

    def template(self, text: str) -> str:
        for value, name in self.substitutions.items():
            text = text.replace(value, "{" + name + "}")
        return text

    def hook(self, response: httpx.Response) -> None:
        request = response.request
        if not DEVICE_API.match(request.url.path):
            return
        response.read()
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        claims = jwt.decode(token, options={"verify_signature": False}) if token else None
        body = request.content.decode() if request.content else None
        self.exchanges.append(
            {
                "method": request.method,
                "path": self.template(request.url.path),
                "query": self.template(request.url.query.decode()),
                "headers": {k: self.template(v) for k, v in request.headers.items() if k in KEPT_HEADERS},
                "body": None if body is None else self.template(body),
                "token": None
                if claims is None
                else {
                    "aud": claims["aud"],
                    "lifetime": claims["exp"] - claims["iat"],
                    "claims": sorted(claims),
                },
                "status": response.status_code,
            }
        )
        etag = response.headers.get("etag")
        if etag and response.status_code == 200:
            self.substitutions[etag] = "etag"  # the hub's, for this device: the replay asks its own


def record(rev: str, scratch: Path) -> dict[str, Any]:
    data_dir = scratch / "hub"
    now = datetime.now(UTC)
    init_data_dir(data_dir, hostnames=("localhost",), now=now)
    settings = HubSettings(data_dir=data_dir, artifacts_dir=scratch / "artifacts")
    store = Store(settings.sqlalchemy_url())
    upgrade(store)
    hub = Hub(settings=settings, store=store, keys=load_keys(data_dir))
    recorder = Recorder()
    with TestClient(create_app(hub), raise_server_exceptions=False) as api:
        admin = {"Authorization": f"Bearer {bootstrap_admin(hub)}"}
        created = api.post("/api/v1/enrollment-tokens", json={"fleet": "golden"}, headers=admin).json()
        recorder.substitutions[created["token"]] = "enrollment_token"
        publish(api, admin, scratch)
        api.event_hooks = {"request": [], "response": [recorder.hook]}
        client = DeviceClient(api)
        device_dir = scratch / "device"
        identity = enroll(client, device_dir, token=created["token"], arch="amd64")
        device_id = identity.device_id
        recorder.substitutions[device_id] = "device"
        client.whoami(identity)
        repository_root, director_root = client.tuf_roots(identity)
        trust_store(device_dir).bootstrap(repository_root=repository_root, director_root=director_root)
        assignment = {"app": "golden", "version": "1.0.0"}
        assigned = api.post(f"/api/v1/devices/{device_id}/assignments", json=assignment, headers=admin)
        assert assigned.status_code == 200, assigned.text
        recorder.exchanges.append({"operator": "assign", **assignment})
        agent = Agent(
            client=client,
            identity=identity,
            engine=StubEngine(),  # type: ignore[arg-type]
            data_dir=device_dir,
            policy=Policy(),
            arch="amd64",
            poll_wait=0,
        )
        agent.update = lambda: None  # type: ignore[method-assign]  # verification needs an engine to act on
        agent.cycle()  # the poll answers in full, the state report goes out
        agent.cycle()  # an unchanged poll (If-None-Match: 304), the same report again
        agent.outbox.add(event(None, "golden", "committed", from_release=None, to_release="1.0.0"))
        agent.cycle()  # the event batch
        renew_if_due(client, device_dir, identity, now=now + timedelta(days=365))
        key_pem = (device_dir / KEY_FILE).read_text()
    store.dispose()
    for exchange in recorder.exchanges:
        if exchange.get("body"):
            exchange["body"] = recorder.template(exchange["body"])
    return {
        "agent_version": __version__,
        "rev": rev,
        "recorded": now.date().isoformat(),
        "device_key": key_pem,
        "exchanges": recorder.exchanges,
        "response_schemas": {name: model.model_json_schema() for name, model in MODELS.items()},
    }


def publish(api: TestClient, admin: dict[str, str], scratch: Path) -> None:
    """Keys, the repository's root and one release golden@1.0.0, as a publisher would make them."""
    from tests.publishing import Publisher  # the recorded release's own test helpers

    class Operator:
        """What `Publisher` asks of a test fleet: operator calls."""

        def call(self, method: str, path: str, **kwargs: Any) -> Any:
            return api.request(method, f"/api/v1{path}", headers=admin, **kwargs)

    Publisher.create(Operator(), scratch).publish("golden", "1.0.0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", required=True, help="the git revision of the recorded agent release")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        recorded = record(args.rev, Path(scratch))
    args.out.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"{len(recorded['exchanges'])} exchanges of agent {recorded['agent_version']} ({args.rev}) -> {args.out}")


if __name__ == "__main__":
    main()

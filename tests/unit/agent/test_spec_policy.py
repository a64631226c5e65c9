"""Container definitions from manifests (confinement and permission mapping) and the device's policy."""

from __future__ import annotations

import pytest

from edgefleet.agent.policy import Policy, PolicyError, Refusal, parse_policy, refusals
from edgefleet.agent.spec import HostFacts, release_specs
from edgefleet.manifest import Release, parse_manifest

IMAGE = "reg.example/acme/app@sha256:" + "a" * 64


def release(permissions: str = "[]", version: str = "1.0.0", env: str = "A: '1'") -> Release:
    return parse_manifest(f"""
services:
  web:
    image: {IMAGE}
    command: serve --port 80
    environment: {{{env}}}
    ports: ["127.0.0.1:80:80"]
    volumes: ["data:/var/lib/web"]
    restart: on-failure:3
volumes: {{data: }}
x-edgefleet:
  app: shop
  version: {version}
  services:
    web:
      resources: {{memory: 128m, cpus: 0.5, pids: 100}}
      permissions: {permissions}
""")


def test_confinement_and_limits_come_from_the_manifest() -> None:
    (spec,) = release_specs(release('["network-bind:80"]'), facts=HostFacts())
    assert spec.command == ("serve", "--port", "80")
    assert (spec.memory, spec.nano_cpus, spec.pids, spec.restart_max) == (128 * 1024**2, 500_000_000, 100, 3)
    assert spec.cap_add == ("NET_BIND_SERVICE",)  # a port below 1024 inside the container
    assert spec.egress
    assert [(m.kind, m.source, m.target) for m in spec.mounts] == [("volume", "data", "/var/lib/web")]
    assert spec.ports[0].host_ip == "127.0.0.1"


@pytest.mark.parametrize(
    ("permission", "devices", "binds"),
    [
        ("serial-port:/dev/ttyUSB0", ["/dev/ttyUSB0:/dev/ttyUSB0:rwm"], []),
        ("camera", ["/dev/video0:/dev/video0:rwm"], []),
        ("i2c:1", ["/dev/i2c-1:/dev/i2c-1:rwm"], []),
        ("host-read:/srv/config", [], [("/srv/config", True)]),
        ("host-write:/srv/spool", [], [("/srv/spool", False)]),
        ("log-observe", [], [("/var/log", True)]),
    ],
)
def test_each_permission_maps_to_exact_engine_settings(
    permission: str, devices: list[str], binds: list[object]
) -> None:
    facts = HostFacts(video_devices=("/dev/video0",))
    (spec,) = release_specs(release(f'["network-bind:80", "{permission}"]'), facts=facts)
    assert list(spec.devices) == devices
    assert [(m.source, m.read_only) for m in spec.mounts if m.kind == "bind"] == binds


def test_digest_ignores_the_release_version_but_not_the_definition() -> None:
    base = release('["network-bind:80"]')
    (a,) = release_specs(base, facts=HostFacts())
    (b,) = release_specs(release('["network-bind:80"]', version="1.1.0"), facts=HostFacts())
    (c,) = release_specs(release('["network-bind:80"]', env="A: '2'"), facts=HostFacts())
    (d,) = release_specs(base, facts=HostFacts(), environment={"A": "3"})
    assert a.config_digest == b.config_digest
    assert len({a.config_digest, c.config_digest, d.config_digest}) == 3
    assert dict(d.environment)["A"] == "3"
    (e,) = release_specs(base, facts=HostFacts(), environment={"LD_PRELOAD": "/tmp/x.so", "A": "4"})
    assert dict(e.environment) == {"A": "4"}  # only variables the publisher declared can be set


def test_policy_grants_only_what_is_allowed_and_not_denied() -> None:
    policy = parse_policy('allow = ["network-bind:*", "camera", "host-read:/srv/config"]\ndeny = ["network-bind:22"]')
    r = release('["network-bind:80", "camera", "host-write:/srv/spool"]')
    assert refusals(r, policy) == [Refusal("web", "host-write:/srv/spool")]
    assert refusals(release('["network-bind:80"]'), Policy()) == [Refusal("web", "network-bind:80")]
    assert not parse_policy('allow = ["network-bind:*"]\ndeny = ["network-bind:80"]').grants(
        next(iter(r.services[0].policy.permissions))
    )


@pytest.mark.parametrize(
    "text",
    [
        "allow = [",
        'allow = "camera"',
        "allow = [1]",
        'allow = ["teleport"]',
        'allow = ["camera:*"]',
        'allow = ["host-read:/etc"]',
        'grant = ["camera"]',
        "allow = [" + ", ".join(['"camera"'] * 300) + "]",
        "x" * 70_000,
    ],
)
def test_malformed_policies_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


@pytest.mark.parametrize(
    ("healthcheck", "judged"),
    [
        ('{test: ["CMD", "true"]}', True),
        ('{test: "true"}', True),
        ('{test: ["NONE"]}', False),
        ('{test: ["CMD", "true"], disable: true}', False),
    ],
)
def test_a_compose_healthcheck_can_be_turned_off_both_ways(healthcheck: str, judged: bool) -> None:
    text = f"""
services:
  web:
    image: {IMAGE}
    healthcheck: {healthcheck}
x-edgefleet:
  app: shop
  version: 1.0.0
  services:
    web:
      resources: {{memory: 128m, cpus: 0.5, pids: 100}}
"""
    (spec,) = release_specs(parse_manifest(text), facts=HostFacts(), environment={})
    assert (spec.health is not None) is judged

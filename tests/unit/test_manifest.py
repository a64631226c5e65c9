"""Release manifests: a good file parses into a Release; every refused key and bad value names its path."""

from __future__ import annotations

import contextlib
import copy
import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.manifest import FORBIDDEN_KEYS, ManifestError, Permission, parse_manifest, parse_permission

DIGEST = "sha256:" + "0123456789abcdef" * 4
GOOD = {
    "services": {
        "sensor": {
            "image": f"registry.local/acme/sensor@{DIGEST}",
            "command": ["/bin/sensor", "--port", "8080"],
            "entrypoint": "/bin/sh",
            "environment": {"LEVEL": "info", "DEBUG": False, "EMPTY": None},
            "ports": ["8080:8080", {"target": 9000, "published": 9001, "host_ip": "0.0.0.0", "protocol": "udp"}],
            "volumes": ["data:/data", {"type": "volume", "source": "cache", "target": "/cache", "read_only": True}],
            "healthcheck": {
                "test": ["CMD", "/bin/sensor", "--check"],
                "interval": "10s",
                "timeout": "1m30s",
                "retries": 5,
                "start_period": "500ms",
            },
            "restart": "on-failure:5",
            "labels": ["team=iot"],
            "depends_on": {"broker": {"condition": "service_healthy"}},
        },
        "broker": {"image": f"acme/broker:2.1@{DIGEST}"},
    },
    "volumes": {"data": None, "cache": {}},
    "x-edgefleet": {
        "app": "sensor",
        "version": "1.2.0-rc.1+build.5",
        "architectures": ["amd64", "arm64"],
        "update": {"strategy": "kill-then-download", "health_window": "2m"},
        "services": {
            "sensor": {
                "resources": {"memory": "64m", "cpus": 0.5, "pids": 64},
                "probes": [
                    {"http": {"port": 8080, "path": "/healthz?deep=1"}, "timeout": "1s"},
                    {"tcp": {"port": 9000}, "retries": 5, "start_period": "10s"},
                    {"exec": ["/bin/sensor", "--self-test"]},
                ],
                "permissions": [
                    "network",
                    "network-bind:8080",
                    "network-bind:9001",
                    "serial-port:/dev/ttyUSB0",
                    "gpio:17",
                    "host-read:/var/lib/acme",
                ],
            },
            "broker": {"resources": {"memory": 134217728, "cpus": 1, "pids": 128}},
        },
    },
}


def dump(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def with_change(path: str, value: object, *, delete: bool = False) -> str:
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if delete:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return dump(doc)


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as error:
        parse_manifest(text, source="app/compose.yaml")
    assert str(error.value).startswith("app/compose.yaml: ")
    return error.value.problems


def test_good_manifest_parses_into_a_normalised_release():
    release = parse_manifest(dump(GOOD))
    assert release.ref == "sensor@1.2.0-rc.1+build.5"
    assert release.architectures == ("amd64", "arm64")
    assert (release.update.strategy, release.update.health_window) == ("kill-then-download", 120.0)
    probes = release.services[0].policy.probes
    assert (probes[0].http.port, probes[0].http.path, probes[0].timeout) == (8080, "/healthz?deep=1", 1.0)
    assert (probes[1].tcp.port, probes[1].retries, probes[1].start_period) == (9000, 5, 10.0)
    assert (probes[2].exec, probes[2].timeout, probes[2].retries) == (["/bin/sensor", "--self-test"], 2.0, 3)
    sensor = release.services[0].compose
    assert sensor.environment == {"LEVEL": "info", "DEBUG": "false", "EMPTY": ""}
    assert [(p.host_ip, p.published, p.target, p.protocol) for p in sensor.ports] == [
        ("127.0.0.1", 8080, 8080, "tcp"),
        ("0.0.0.0", 9001, 9000, "udp"),
    ]
    assert [(v.source, v.target, v.read_only) for v in sensor.volumes] == [
        ("data", "/data", False),
        ("cache", "/cache", True),
    ]
    assert sensor.healthcheck.timeout == 90.0
    assert sensor.healthcheck.start_period == 0.5
    assert sensor.labels == {"team": "iot"}
    assert sensor.depends_on == {"broker": "service_healthy"}
    assert release.services[1].policy.resources.memory == 128 * 1024**2
    assert release.services[0].policy.resources.memory == 64 * 1024**2
    assert Permission("gpio", "17") in release.services[0].policy.permissions
    assert release.volumes == ("data", "cache")


@pytest.mark.parametrize("key", sorted(FORBIDDEN_KEYS))
def test_each_confinement_bypass_is_refused_with_a_pointer(key):
    found = problems(with_change(f"services.sensor.{key}", True))
    assert found == [(f"services.sensor.{key}", f"not allowed: {FORBIDDEN_KEYS[key]}")]


@pytest.mark.parametrize(
    ("path", "value", "where", "says"),
    [
        (
            "services.sensor.image",
            "acme/sensor:latest",
            "services.sensor.image",
            "must be pinned by digest (image@sha256:...)",
        ),
        ("services.sensor.image", f"acme/sensor@sha256:{'0' * 63}", "services.sensor.image", "pinned by digest"),
        # A tag's \w is ASCII in the OCI grammar: a Unicode letter is refused here, not by the engine later.
        ("services.sensor.image", f"acme/sensor:v\u00e9@{DIGEST}", "services.sensor.image", "pinned by digest"),
        ("services.sensor.volumes", ["/etc:/etc"], "services.sensor.volumes", "host-read:PATH"),
        (
            "services.sensor.volumes",
            ["/var/run/docker.sock:/var/run/docker.sock"],
            "services.sensor.volumes",
            "engine's socket",
        ),
        (
            "services.sensor.volumes",
            [{"type": "bind", "source": "/srv", "target": "/srv"}],
            "services.sensor.volumes",
            "only named volumes",
        ),
        ("services.sensor.volumes", ["undeclared:/x"], "services.sensor.volumes.0", "not declared"),
        ("services.sensor.ports", ["7000:7000"], "services.sensor.ports.0", "'network-bind:7000'"),
        ("services.sensor.ports", ["99999:1"], "services.sensor.ports", "1..65535"),
        ("services.sensor.ports", ["999.1.1.1:8080:8080"], "services.sensor.ports", "not an IP address"),
        ("services.sensor.ports", [{"target": 1, "host_ip": "eth0"}], "services.sensor.ports", "not an IP address"),
        ("services.sensor.restart", "sometimes", "services.sensor.restart", "on-failure"),
        ("services.sensor.depends_on", ["ghost"], "services.sensor.depends_on.ghost", "no such"),
        (
            "services.sensor.healthcheck",
            {"test": ["CMD", "x"], "interval": "soon"},
            "services.sensor.healthcheck.interval",
            "duration",
        ),
        ("services.sensor.environment", {"BAD NAME": "x"}, "services.sensor.environment", "bad variable name"),
        ("services.sensor.tty", True, "services.sensor.tty", "unknown key"),
        ("volumes.data", {"driver": "nfs"}, "volumes", "driver options"),
        ("x-edgefleet.version", "1.2", "x-edgefleet.version", "SemVer"),
        ("x-edgefleet.app", "Bad App", "x-edgefleet.app", "pattern"),
        ("x-edgefleet.architectures", ["vax"], "x-edgefleet.architectures.0", "Input should be"),
        ("x-edgefleet.update", {"strategy": "yolo"}, "x-edgefleet.update.strategy", "Input should be"),
        ("x-edgefleet.update", {"health_window": "2h"}, "x-edgefleet.update.health_window", "between"),
        (
            "x-edgefleet.services.sensor.resources",
            {"memory": "64m", "cpus": 0.5},
            "x-edgefleet.services.sensor.resources.pids",
            "Field required",
        ),
        (
            "x-edgefleet.services.sensor.resources",
            {"memory": "1k", "cpus": 0.5, "pids": 1},
            "x-edgefleet.services.sensor.resources.memory",
            "between",
        ),
        (
            "x-edgefleet.services.sensor.permissions",
            ["root"],
            "x-edgefleet.services.sensor.permissions",
            "unknown permission",
        ),
        (
            "x-edgefleet.services.ghost",
            {"resources": {"memory": "8m", "cpus": 1, "pids": 1}},
            "x-edgefleet.services.ghost",
            "no such service",
        ),
        ("x-edgefleet.extra", 1, "x-edgefleet.extra", "unknown key"),
        (
            "x-edgefleet.update",
            {"strategy": "hand-over"},
            "services.sensor.ports",
            "a host port cannot be bound twice",
        ),
        ("x-edgefleet.services.sensor.probes", [{}], "x-edgefleet.services.sensor.probes.0", "exactly one of"),
        (
            "x-edgefleet.services.sensor.probes",
            [{"tcp": {"port": 1}, "exec": ["x"]}],
            "x-edgefleet.services.sensor.probes.0",
            "exactly one of",
        ),
        (
            "x-edgefleet.services.sensor.probes",
            [{"tcp": {"port": 0}}],
            "x-edgefleet.services.sensor.probes.0.tcp.port",
            "greater",
        ),
        (
            "x-edgefleet.services.sensor.probes",
            [{"http": {"port": 80, "path": "no-slash"}}],
            "x-edgefleet.services.sensor.probes.0.http.path",
            "pattern",
        ),
        (
            "x-edgefleet.services.sensor.probes",
            [{"http": {"port": 80, "path": "/a b"}}],
            "x-edgefleet.services.sensor.probes.0.http.path",
            "pattern",
        ),
        (
            "x-edgefleet.services.sensor.probes",
            [{"exec": []}],
            "x-edgefleet.services.sensor.probes.0.exec",
            "at least 1",
        ),
        (
            "x-edgefleet.services.sensor.probes",
            [{"tcp": {"port": 1}, "timeout": "1h"}],
            "x-edgefleet.services.sensor.probes.0.timeout",
            "between",
        ),
        (
            "x-edgefleet.services.sensor.probes",
            [{"tcp": {"port": port}} for port in range(1, 10)],
            "x-edgefleet.services.sensor.probes",
            "at most 8",
        ),
        (
            "x-edgefleet.services.sensor.probes",
            [{"tcp": {"port": 1}, "shell": "x"}],
            "x-edgefleet.services.sensor.probes.0.shell",
            "unknown key",
        ),
        ("networks", {"front": {}}, "networks", "one network of its own"),
    ],
)
def test_bad_values_name_their_path(path, value, where, says):
    found = problems(with_change(path, value))
    assert any(p == where and says in m for p, m in found), found


def test_missing_policy_for_a_service_is_named():
    assert ("x-edgefleet.services.broker", "missing: every service states its resources") in problems(
        with_change("x-edgefleet.services.broker", None, delete=True)
    )


def test_dependency_cycles_are_refused():
    doc = copy.deepcopy(GOOD)
    doc["services"]["broker"]["depends_on"] = ["sensor"]
    assert any("cycle" in m for _, m in problems(dump(doc)))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("serial-port:/dev/../etc/shadow", "'..'"),
        ("serial-port:/tmp/x", "serial device"),
        ("serial-port:/dev/sda", "serial device"),
        ("serial-port:/dev/mem", "serial device"),
        ("host-read:/run", "engine"),
        ("host-read:/run/podman", "engine"),
        ("host-read:/var", "holds"),
        ("host-write:/var/lib", "engine"),
        ("host-read:/var/lib/edgefleet", "engine"),
        ("host-read:/var/lib/containers/storage", "engine"),
        ("host-write:/etc/passwd", "sensitive"),
        ("host-read:/", "sensitive"),
        ("host-read:/var/run/docker.sock", "socket"),
        ("host-read:relative", "absolute"),
        ("gpio:2000", "0..1023"),
        ("i2c:x", "0..255"),
        ("network-bind:0", "1..65535"),
        ("sudo", "unknown permission"),
    ],
)
def test_bad_permissions(text, error):
    with pytest.raises(ValueError, match=error):
        parse_permission(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "just text",
        "services: 1",
        "a: &x [1]\nb: *x\n",
        ("a:\n" + "  " * 0) + "[" * 100 + "]" * 100,
        "\x00\x01",
        "x-edgefleet: {}",
    ],
    ids=["empty", "list", "scalar", "services-int", "alias", "deep", "binary", "no-services"],
)
def test_malformed_files_are_manifest_errors(text):
    assert problems(text)


def test_oversized_file_is_refused_unparsed():
    assert problems("#" * (300 * 1024)) == [("(file)", "larger than 262144 bytes")]


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(yaml_values)
def test_arbitrary_yaml_never_crashes_the_parser(value):
    with contextlib.suppress(ManifestError):
        parse_manifest(yaml.safe_dump(value))


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(
        [
            "services.sensor",
            "services.broker",
            "x-edgefleet",
            "x-edgefleet.services.sensor",
            "services.sensor.healthcheck",
            "x-edgefleet.update",
        ]
    ),
    key=st.text(st.characters(exclude_characters="."), min_size=1, max_size=10),
    value=yaml_values,
)
def test_arbitrary_changes_to_a_good_file_parse_or_fail_cleanly(path, key, value):
    try:
        parse_manifest(with_change(f"{path}.{key}", value))
    except ManifestError as error:
        problems_found = error.problems
    else:
        problems_found = [("ok", "")]
    assert problems_found


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500))
def test_arbitrary_bytes_never_crash_the_parser(data):
    with contextlib.suppress(ManifestError):
        parse_manifest(data)


@pytest.mark.parametrize(
    "text", ["serial-port:/dev/ttyACM0", "serial-port:/dev/ttyS1", "host-read:/srv/config", "host-write:/var/spool/app"]
)
def test_good_permissions(text):
    assert str(parse_permission(text)) == text


@given(tag=st.text(min_size=1, max_size=130))
@settings(max_examples=300)
def test_the_manifest_and_the_signed_bundle_target_agree_on_an_image_tag(tag: str) -> None:
    """The manifest's check (Python's `re`) and the wire model's (pydantic's engine) take the same tags: ASCII ones."""
    from edgefleet.releases import BundleTarget

    image = f"acme/sensor:{tag}@{DIGEST}"
    try:
        parse_manifest(with_change("services.sensor.image", image).encode())
        as_manifest = True
    except ManifestError:
        as_manifest = False
    try:
        BundleTarget(app="demo", version="1.0.0", image=image)
        as_target = True
    except ValueError:
        as_target = False
    assert as_manifest == as_target
    if not tag.isascii():
        assert not as_target  # no Unicode anywhere: the engines' grammar is ASCII
    elif re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}", tag):
        assert as_target

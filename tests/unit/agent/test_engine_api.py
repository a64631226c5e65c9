"""The Engine API client (agent.engine.api) and the container definition it sends (DockerEngine's create_body).

The definition is compared with what docker-py sent for the same specs before the agent
dropped it (tests/golden/engine_create.json); error answers, framed logs and progress
streams are fed through an in-memory transport. The same calls against Podman and Docker
Engine are the integration tests of `DockerEngine` (tests/integration/agent/test_engine.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.bounds import DEFAULT_BOUNDS
from edgefleet.agent.engine.api import (
    EngineApi,
    demultiplexed,
)
from edgefleet.agent.engine.docker import DockerEngine, container_name, create_body
from edgefleet.agent.engine.images import _untagged
from edgefleet.agent.errors import EngineError, EngineNotFoundError
from edgefleet.agent.plan import StartContainer, StopContainer
from edgefleet.agent.spec import ContainerSpec, Health, Mount
from edgefleet.manifest import Port
from tests.update_matrix import bare_spec

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "engine_create.json"


MINIMAL = bare_spec(
    app="plant",
    service="web",
    release="2.0.0",
    image="registry.local/acme/web@sha256:" + "ab" * 32,
    config_digest="cd" * 32,
)


def spec(**changes: Any) -> ContainerSpec:
    return replace(MINIMAL, **changes)


SPECS = {
    "minimal": spec(),
    "everything": spec(
        command=("/bin/web", "--port", "8080"),
        entrypoint=("/bin/sh", "-c"),
        environment=(("LEVEL", "info"), ("EMPTY", "")),
        labels=(("com.example.x", "y"),),
        egress=True,
        ports=(Port("0.0.0.0", 8080, 80, "tcp"), Port("127.0.0.1", 9001, 9000, "udp")),
        mounts=(
            Mount("volume", "data", "/data", read_only=False),
            Mount("bind", "/srv/in", "/srv/in", read_only=True),
            Mount("bind", "/dev/bus/usb", "/dev/bus/usb", read_only=False),
        ),
        devices=("/dev/ttyUSB0:/dev/ttyUSB0:rwm",),
        device_cgroup_rules=("c 189:* rwm",),
        cap_add=("NET_BIND_SERVICE",),
        memory=32 * 1024 * 1024,
        nano_cpus=250_000_000,
        pids=32,
        restart_max=5,
        health=Health(("CMD", "/bin/web", "--check"), 10.0, 90.0, 5, 0.5),
        depends_on=("db",),
    ),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_container_is_defined_as_docker_py_defined_it(name: str) -> None:
    recorded = json.loads(GOLDEN.read_text())[name]
    owner = {"io.edgefleet.managed": "true", "io.edgefleet.owner": "dev-1"}
    given_spec = SPECS[name]
    body = create_body(given_spec, image=given_spec.image, network="edgefleet-ns_plant", owner=owner, namespace="ns")
    assert body == recorded["body"]
    assert container_name(given_spec, namespace="ns") == recorded["name"]


def engine(handler: Callable[[httpx.Request], httpx.Response]) -> EngineApi:
    return EngineApi("unix:///nowhere.sock", version="1.41", timeout=5, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable", "says"),
    [
        (404, b'{"message": "No such container: abc"}', EngineNotFoundError, False, "No such container: abc"),
        (409, b'{"message": "conflict:\\n  in use"}', EngineError, False, "conflict: in use"),
        (500, b'{"message": "storage is broken"}', EngineError, True, "storage is broken"),
        (502, b"<html>bad gateway</html>", EngineError, True, "<html>bad gateway</html>"),
        (400, b"", EngineError, False, "HTTP 400"),
    ],
)
def test_an_error_answer_is_an_engine_error_with_the_engines_words(
    status: int, body: bytes, kind: type[EngineError], retryable: bool, says: str
) -> None:
    api = engine(lambda _: httpx.Response(status, content=body))
    with pytest.raises(kind) as error:
        api.call("inspect abc", "GET", "/containers/abc/json")
    assert type(error.value) is kind
    assert error.value.retryable is retryable
    assert error.value.message == f"inspect abc: {says}"


def test_the_request_is_versioned_and_names_are_quoted_as_one_segment() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"Id": "sha256:1"})

    api = engine(answer)
    assert api.call("inspect", "GET", "/images/registry.local:5000/acme/web%40sha256:ab/json") == {"Id": "sha256:1"}
    assert api.call("version", "GET", "/version", versioned=False) == {"Id": "sha256:1"}
    assert [r.url.raw_path for r in seen] == [
        b"/v1.41/images/registry.local:5000/acme/web%40sha256:ab/json",
        b"/version",
    ]


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (httpx.Response(200, content=b"not json"), "inspect: the engine's answer is not JSON"),
        (httpx.Response(200, content=b"[" + b"1," * (DEFAULT_BOUNDS.engine_answer_bytes // 2) + b"1]"), "larger than"),
    ],
)
def test_a_malformed_or_oversized_answer_is_refused(answer: httpx.Response, says: str) -> None:
    with pytest.raises(EngineError, match=says):
        engine(lambda _: answer).call("inspect", "GET", "/x")


def test_an_unreachable_engine_is_a_retryable_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(EngineError) as error:
        engine(refuse).call("list containers", "GET", "/containers/json")
    assert error.value.retryable
    assert error.value.message == "list containers: connection refused"


@pytest.mark.parametrize("address", ["ssh://device", "/run/podman/podman.sock", "npipe:////./pipe/docker"])
def test_an_address_the_agent_does_not_speak_is_refused(address: str) -> None:
    with pytest.raises(EngineError, match="use unix:///PATH or tcp://HOST:PORT") as error:
        EngineApi(address, version="1.41", timeout=1)
    assert not error.value.retryable


def stream(*chunks: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(200, content=iter(chunks))


def test_progress_messages_are_read_however_the_engine_separates_them() -> None:
    engine(stream(b'{"status": "Pulling"}{"status"', b': "Done"}\r\n', b'\n{"stream": "Loaded"}')).progress(
        "pull", "/images/create"
    )


@pytest.mark.parametrize(
    ("chunks", "says"),
    [
        ((b'{"status": "Pulling"}', b'{"errorDetail": {"message": "manifest unknown"}}'), "pull: manifest unknown"),
        ((b'{"error": "no space left"}',), "pull: no space left"),
        ((b'{"status": "Pull',), "ends inside a message"),
        ((b'{"status": "' + b"x" * (DEFAULT_BOUNDS.engine_message_bytes + 1),), "progress message over"),
    ],
)
def test_a_progress_stream_that_reports_an_error_or_breaks_off_fails(chunks: tuple[bytes, ...], says: str) -> None:
    with pytest.raises(EngineError, match=says):
        engine(stream(*chunks)).progress("pull", "/images/create")


def frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_framed_output_is_joined_and_unframed_output_kept() -> None:
    assert demultiplexed(frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"")) == b"out\nerr\n"
    assert demultiplexed(b"a terminal's output\n") == b"a terminal's output\n"
    assert demultiplexed(b"") == b""


@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=64)), max_size=8), st.integers(0, 40))
def test_framed_output_cut_anywhere_gives_a_prefix_of_the_payloads(frames: list[tuple[int, bytes]], cut: int) -> None:
    whole = b"".join(frame(kind, payload) for kind, payload in frames)
    payloads = b"".join(payload for _, payload in frames)
    assert demultiplexed(whole) == payloads
    assert payloads.startswith(demultiplexed(whole[: len(whole) - cut])) or len(whole) - cut < 8


def test_a_container_of_another_owner_is_not_touched() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET", "nothing but the inspect may be sent"
        return httpx.Response(200, json={"Id": "abc", "Config": {"Labels": {"io.edgefleet.owner": "someone"}}})

    found = DockerEngine("unix:///nowhere.sock", owner="dev-1")
    found._api = engine(answer)
    with pytest.raises(EngineError, match="is not this agent's") as error:
        found.logs("abc")
    assert not error.value.retryable


def test_a_proxy_in_the_environment_is_not_used_for_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device's HTTP_PROXY is for the internet: the engine's socket is reached directly."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    engine(answer).call("info", "GET", "/info")
    assert [request.url.host for request in seen] == ["engine"]


class FakeEngine:
    """Answers as an engine would for one of the agent's containers; records each request and its read timeout."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.seen: list[tuple[str, str, float | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1.41")
        self.seen.append((request.method, path, request.extensions["timeout"]["read"]))
        labels = {"io.edgefleet.managed": "true", "io.edgefleet.owner": self.owner}
        if request.method == "GET" and path == "/containers/abc/json":
            return httpx.Response(200, json={"Id": "abc", "Config": {"Labels": labels}})
        if path == "/containers/abc/exec":
            return httpx.Response(201, json={"Id": "e1"})
        if path == "/exec/e1/start":  # the raw stream, as Docker answers after taking over the connection
            return httpx.Response(200, content=frame(1, b"ok\n"))
        if path == "/exec/e1/json":
            return httpx.Response(200, json={"ExitCode": 0})
        if path in ("/containers/abc/start", "/containers/abc/stop"):
            return httpx.Response(304)  # already started, already stopped: no error (as docker-py took it)
        if path == "/images/create":
            return httpx.Response(200, content=b'{"status": "Pulled"}\n')
        return httpx.Response(404, json={"message": f"unexpected {request.method} {path}"})


def fake_engine() -> tuple[DockerEngine, FakeEngine]:
    found = DockerEngine("unix:///nowhere.sock", owner="dev-1")
    answers = FakeEngine("dev-1")
    found._api = engine(answers)
    return found, answers


def test_a_probe_waits_no_longer_than_its_timeout_on_any_request() -> None:
    found, answers = fake_engine()
    assert found.probe("abc", ("/bin/true",), timeout=2.5)
    assert [(method, path, read) for method, path, read in answers.seen if "exec" in path] == [
        ("POST", "/containers/abc/exec", 2.5),
        ("POST", "/exec/e1/start", 2.5),
        ("GET", "/exec/e1/json", 2.5),
    ]


def test_starting_a_started_and_stopping_a_stopped_container_are_no_errors() -> None:
    found, answers = fake_engine()
    found.execute(StartContainer("plant", "web", container_id="abc"), {})
    found.execute(StopContainer("plant", "web", container_id="abc"), {})
    assert (
        "POST",
        "/containers/abc/stop",
        DEFAULT_BOUNDS.stop_timeout + found.timeout,
    ) in answers.seen  # it waits for the stop


def test_a_pull_names_the_repository_by_digest_and_may_be_quiet_while_layers_unpack() -> None:
    _, answers = fake_engine()
    api = engine(answers)
    api.progress("pull", "/images/create", params={"fromImage": "registry.local:5000/acme/web", "tag": "sha256:ab"})
    assert answers.seen == [("POST", "/images/create", DEFAULT_BOUNDS.engine_silence)]


@pytest.mark.parametrize(
    ("name", "repository"),
    [
        ("registry.local:5000/acme/web:1.0", "registry.local:5000/acme/web"),
        ("registry.local:5000/acme/web", "registry.local:5000/acme/web"),
        ("acme/web:latest", "acme/web"),
        ("web", "web"),
    ],
)
def test_a_tag_beside_the_digest_is_left_out_of_the_pull(name: str, repository: str) -> None:
    assert _untagged(name) == repository

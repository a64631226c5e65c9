"""The agent's hub client at its boundary: answers read within their bounds, entity tags checked before use.

The hub is played by httpx's MockTransport here, to send what a real hub never does (an
endless answer, a compressed bomb, a header that is not an entity tag); the same client
against a real hub is in tests/integration and tests/e2e.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from edgefleet import crypto
from edgefleet.agent.bounds import Bounds
from edgefleet.agent.client import DeviceClient
from edgefleet.agent.errors import HubUnreachableError
from edgefleet.agent.identity import LocalIdentity
from edgefleet.protocol import DeviceIdentity

DEVICE = "00000000-0000-4000-8000-000000000001"
KiB = 1024
BOUNDS = Bounds(response_bytes=64 * KiB, root_bytes=128 * KiB)
TARGET = json.dumps({"device_id": DEVICE, "apps": {}}).encode()


@pytest.fixture(scope="module")
def identity() -> LocalIdentity:
    device = DeviceIdentity(device_id=DEVICE, status="accepted", fleet="lab", ca_bundle="-")
    return LocalIdentity(key=crypto.generate_key(), identity=device)


def client(answer: Callable[[httpx.Request], httpx.Response]) -> DeviceClient:
    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="https://hub.test")
    return DeviceClient(http, bounds=BOUNDS)


def endless() -> Iterator[bytes]:
    while True:
        yield b"x" * KiB


@pytest.mark.parametrize(
    "answer",
    [
        lambda _r: httpx.Response(200, content=b"[" + b" " * 65 * KiB + b"]"),
        lambda _r: httpx.Response(200, content=endless()),  # chunked, no length: read only up to the bound
    ],
    ids=["long", "endless"],
)
def test_an_answer_longer_than_its_bound_is_refused_without_reading_it_all(
    identity: LocalIdentity, answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    with client(answer) as hub, pytest.raises(HubUnreachableError, match="larger than 65536 bytes"):
        hub.target_state(identity)


def test_the_agent_asks_for_answers_as_they_are_and_refuses_a_compressed_one(identity: LocalIdentity) -> None:
    """A compressed answer's size says nothing of what it expands to (a few KiB of gzip make megabytes)."""
    asked: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Accept-Encoding"))
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=gzip.compress(b" " * 512 * KiB))

    with client(answer) as hub, pytest.raises(HubUnreachableError, match="encoded as 'gzip'"):
        hub.target_state(identity)
    assert asked == ["identity"]


def test_headers_in_any_encoding_are_kept(identity: LocalIdentity) -> None:
    """A proxy may add a header that is not ASCII: the answer is still read, not a crash of the agent."""
    headers = [(b"ETag", b'"t1"'), (b"X-Proxy", "caf\u00e9".encode("latin-1")), (b"Content-Encoding", b"identity")]
    with client(lambda _r: httpx.Response(200, headers=headers, content=TARGET)) as hub:
        state, etag = hub.target_state(identity)
    assert state is not None
    assert etag == '"t1"'


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ('"t1"', '"t1"'),
        ('W/"t1"', 'W/"t1"'),
        ("t1", None),  # not quoted
        ('""', None),
        ('"' + "a" * 129 + '"', None),  # longer than the agent keeps
        ('"t 1"', None),  # a space is not an entity tag's
        ('"t1", "t2"', None),
    ],
)
def test_an_etag_that_is_not_an_entity_tag_is_taken_as_none(
    identity: LocalIdentity, sent: str, kept: str | None
) -> None:
    """What the agent sends back in If-None-Match and keeps in installed.json is checked before either."""
    with client(lambda _r: httpx.Response(200, headers={"ETag": sent}, content=TARGET)) as hub:
        assert hub.target_state(identity)[1] == kept


def test_a_root_is_read_within_its_own_bound_not_the_answers(identity: LocalIdentity) -> None:
    """A root may be larger than an ordinary answer (`root_bytes`), never larger than that."""
    sizes = {"/api/v1/tuf/director/root.json": 100 * KiB}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"{" + b" " * (sizes[request.url.path] - 2) + b"}")

    with client(answer) as hub:
        assert len(hub.director_root(identity)) == 100 * KiB
        sizes["/api/v1/tuf/director/root.json"] = 129 * KiB
        with pytest.raises(HubUnreachableError, match="larger than 131072 bytes"):
            hub.director_root(identity)

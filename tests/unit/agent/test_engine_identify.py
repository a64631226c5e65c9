"""The agent tells which engine answers and refuses one whose Engine API is older than it is tested on.

The engine here is a stand-in HTTP server answering `/version` as an old Docker would (no
engine that old is installable here); the real Docker and Podman are identified in
tests/integration/agent/test_engine.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from edgefleet.agent.engine.docker import DockerEngine
from edgefleet.agent.errors import EngineError


class OldDocker(BaseHTTPRequestHandler):
    """Docker 19.03: Engine API 1.40; every versioned path answers as an engine that old does."""

    answer: ClassVar[dict[str, object]] = {
        "Version": "19.03.15",
        "ApiVersion": "1.40",
        "MinAPIVersion": "1.12",
        "Components": [{"Name": "Engine", "Version": "19.03.15"}],
    }
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        OldDocker.paths.append(self.path)
        if self.path == "/version":
            body, status = json.dumps(self.answer).encode(), 200
        else:
            body, status = b'{"message": "client version 1.41 is too new. Maximum supported API version is 1.40"}', 400
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def old_engine() -> Iterator[str]:
    OldDocker.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), OldDocker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_engine_api_older_than_tested_is_refused_for_good(old_engine: str) -> None:
    engine = DockerEngine(old_engine)
    with pytest.raises(EngineError) as refused:
        engine.identify()
    assert not refused.value.retryable
    assert refused.value.message == (
        "docker 19.03.15 offers Engine API 1.40; the agent needs 1.41 or newer "
        "(Docker 20.10, Podman 4.3 and newer are tested)"
    )
    assert OldDocker.paths == ["/version"]  # asked without a version prefix, so an old engine answers


def test_an_engine_that_does_not_answer_may_come_later() -> None:
    with pytest.raises(EngineError) as away:
        DockerEngine("tcp://127.0.0.1:9", timeout=2).identify()
    assert away.value.retryable


def test_agent_run_refuses_an_engine_too_old_before_it_enrolls(old_engine: str, tmp_path: Path) -> None:
    # The hub address is never asked: the engine is checked first, so the enrollment token is not spent.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "edgefleet.cli.main", "agent", "run", "--hub", "https://127.0.0.1:9"),
            *("--engine", old_engine, "--token", "efe_x_y", "--data-dir", str(tmp_path / "dev"), "--trust-first-root"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 4, result.stderr
    assert "error: cannot start: docker 19.03.15 offers Engine API 1.40; the agent needs 1.41" in result.stderr
    assert not (tmp_path / "dev").exists()

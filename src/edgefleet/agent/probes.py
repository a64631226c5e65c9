"""HTTP and TCP health probes the agent runs from the host against a container's address on its app network."""

from __future__ import annotations

import http.client
import socket

from edgefleet.agent.bounds import DEFAULT_BOUNDS


def tcp_ok(host: str, port: int, *, timeout: float) -> bool:
    """A TCP connection to host:port opens within `timeout`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(host: str, port: int, path: str, *, timeout: float, limit: int = DEFAULT_BOUNDS.probe_answer_bytes) -> bool:
    """GET http://host:port/path answers 2xx or 3xx within `timeout` (no redirects followed; `limit` bytes read)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "edgefleet-agent-probe"})
        response = connection.getresponse()
        response.read(limit)
        return 200 <= response.status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()

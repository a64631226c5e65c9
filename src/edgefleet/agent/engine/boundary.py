"""Calls into docker-py, with its and the transport's errors converted to `EngineError` (the engine boundary)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from edgefleet.agent.errors import EngineError


@contextlib.contextmanager
def converted(what: str) -> Iterator[None]:
    """docker-py and transport errors -> EngineError (client errors are not retryable)."""
    try:
        yield
    except docker.errors.APIError as exc:
        status = exc.status_code or 500
        raise EngineError(f"{what}: {exc.explanation or exc}", retryable=status >= 500) from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise EngineError(f"{what}: {exc}") from exc

"""Blocking service calls made from the event loop: run in the thread pool, their hub errors raised without a cycle.

The API's async routes, the device fast lane and the dashboard call the services (which block
on the database or the disk) in Starlette's thread pool. An exception raised there reaches the
awaiting coroutine through an asyncio future, and its traceback holds the coroutine frames that
hold that future: a reference cycle only the garbage collector frees. A device refused that way
(its next root's 404 on every update where this process does not hold the roots, a revoked
device's 403) left about a hundred objects for the collector, whose pauses the hub's p99 waits
on at fleet scale (docs/benchmarks.md, "The collector's garbage"). `call` catches the
service's `HubError` in the thread, hands it over as a value without its traceback, and raises
it again on the loop's side, where no frame keeps it. Only that traceback is dropped: an error
it was raised from (`__cause__`) keeps its own, which holds no frame of this side. Any other
exception propagates as from `run_in_threadpool`, traceback and all: an unexpected error is
logged with where it came from. (FastAPI's own hop for plain `def` routes left no such garbage
in tests/integration/hub/test_garbage.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

from edgefleet.hub.errors import HubError

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Refused:
    """A hub error raised in the thread, its traceback dropped (it held only the thread's finished frames)."""

    error: HubError


async def call(function: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """`function(*args, **kwargs)` in the thread pool; its `HubError` raised here as it was raised there.

    Raises:
        HubError: what `function` raised, with a traceback of this side's frames only.
    """
    outcome = await run_in_threadpool(_refusing, function, args, kwargs)
    if not isinstance(outcome, _Refused):
        return outcome
    error = outcome.error
    del outcome
    try:
        raise error
    finally:
        del error  # this frame is in the traceback: it must not hold the error too


def _refusing(function: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _T | _Refused:
    try:
        return function(*args, **kwargs)
    except HubError as exc:
        return _Refused(exc.with_traceback(None))

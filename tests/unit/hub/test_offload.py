"""`offload.call`: a blocking call's value, its hub error raised without a reference cycle, other errors as they are."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import traceback

import pytest

from edgefleet.hub import offload
from edgefleet.hub.errors import HubError, NotFoundError


def refuse(code: str) -> None:
    raise NotFoundError(code, "no such thing")


def fail() -> None:
    raise ValueError("a bug")


def refuse_from(cause: Exception) -> None:
    raise NotFoundError("gone", "no such thing") from cause


def test_the_value_comes_back() -> None:
    assert asyncio.run(offload.call(lambda a, *, b: (a, b), 1, b=2)) == (1, 2)


def test_a_hub_error_is_raised_as_it_was_with_this_sides_frames_only() -> None:
    async def main() -> HubError:
        try:
            await offload.call(refuse, "gone")
        except HubError as exc:
            return exc
        raise AssertionError("not raised")

    error = asyncio.run(main())
    assert isinstance(error, NotFoundError)
    assert (error.code, error.message) == ("gone", "no such thing")
    assert [frame.name for frame in traceback.extract_tb(error.__traceback__)] == ["main", "call"]


def test_a_hub_error_leaves_nothing_for_the_collector() -> None:
    async def refused(times: int) -> None:
        for _ in range(times):
            with contextlib.suppress(HubError):
                await offload.call(refuse, "gone")
            with contextlib.suppress(HubError):
                await offload.call(refuse_from, KeyError("a cause"))

    asyncio.run(refused(1))
    gc.collect()
    gc.garbage.clear()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(refused(50))
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    assert not [o for o in garbage if isinstance(o, HubError)]
    assert len(garbage) < 50  # asyncio.run's own loop leaves a few; each refusal across the hop left dozens


def test_the_error_it_was_raised_from_stays_with_it() -> None:
    cause = KeyError("a cause")
    with pytest.raises(NotFoundError) as raised:
        asyncio.run(offload.call(refuse_from, cause))
    assert raised.value.__cause__ is cause


def test_any_other_error_keeps_where_it_came_from() -> None:
    with pytest.raises(ValueError, match="a bug") as raised:
        asyncio.run(offload.call(fail))
    assert "fail" in [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]

"""Long-polling with ETag/If-None-Match: hold a device's request until its answer changes or the wait ends.

Shared by `/device/self` and `/device/target`. While the device's `If-None-Match` equals
the current answer's ETag, the request is held and the answer re-read at most every
`LONG_POLL_INTERVAL` seconds, for at most `wait` capped by the hub's
`long_poll_max_seconds`; then it ends with a 304 that carries only the ETag.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Header, Query, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

LONG_POLL_INTERVAL = 1.0
"""How often a held request re-reads its answer (seconds)."""

Wait = Annotated[float, Query(ge=0, le=3600, description="Long-poll: seconds to wait for a change")]
IfNoneMatch = Annotated[str | None, Header(max_length=128)]
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Unchanged during the whole wait (If-None-Match matched); no body"}
}

Answer = TypeVar("Answer", bound=BaseModel)


def etag(answer: BaseModel) -> str:
    """A strong validator of the answer's content."""
    return '"' + hashlib.sha256(answer.model_dump_json().encode()).hexdigest()[:32] + '"'


async def hold(
    response: Response,
    first: Answer,
    reread: Callable[[], Answer],
    *,
    if_none_match: str | None,
    wait: float,
    max_seconds: float,
) -> Answer | Response:
    """The answer with its ETag, once it differs from `if_none_match`; a bare 304 if it never did.

    Args:
        response: the route's response, to carry the ETag header.
        first: the answer as it is now.
        reread: reads the answer again (blocking; run in the thread pool). Whatever it
            raises (e.g. the device was revoked meanwhile) ends the request.
        if_none_match: the ETag the device already holds, if any.
        wait: how long the device is willing to wait (seconds).
        max_seconds: the hub's cap on `wait`.
    """
    answer = first
    deadline = time.monotonic() + min(wait, max_seconds)
    while if_none_match == etag(answer):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Response(status_code=304, headers={"ETag": if_none_match})
        await asyncio.sleep(min(LONG_POLL_INTERVAL, remaining))
        answer = await run_in_threadpool(reread)
    response.headers["ETag"] = etag(answer)
    return answer

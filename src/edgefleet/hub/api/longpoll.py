"""Long-polling with ETag/If-None-Match: hold a device's request until its answer changes or the wait ends.

Shared by `/device/self` and `/device/target`. While the device's `If-None-Match` equals
the current answer's ETag, the request is held, for at most `wait` capped by the hub's
`long_poll_max_seconds`; then it ends with a 304 that carries only the ETag. While held, it
reads its answer again only when the hub's `Notifier` wakes it for its device (a committed
change, in any hub process) and every `FALLBACK_SECONDS` (for changes nothing announces,
such as time passing). It subscribes before it reads, so no wake is lost in between.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Header, Query, Response
from pydantic import BaseModel

from edgefleet.hub import offload
from edgefleet.hub.notify import Notifier

FALLBACK_SECONDS = 30.0
"""How often a held request reads its answer again without being woken."""

MAX_WAIT_SECONDS = 3600
"""The most a device may ask to wait (the hub then caps it at `long_poll_max_seconds`)."""
MAX_ETAG_LENGTH = 128
"""The longest If-None-Match taken; ours are 34 characters."""
Wait = Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="Long-poll: seconds to wait for a change")]
IfNoneMatch = Annotated[str | None, Header(max_length=MAX_ETAG_LENGTH)]
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Unchanged during the whole wait (If-None-Match matched); no body"}
}

Answer = TypeVar("Answer", bound=BaseModel)


def etag(answer: BaseModel) -> str:
    """A strong validator of the answer's content."""
    return '"' + hashlib.sha256(answer.model_dump_json().encode()).hexdigest()[:32] + '"'


async def settle(
    read: Callable[[], Answer],
    *,
    notifier: Notifier,
    device_id: str,
    first: Answer | None = None,
    peek: Callable[[], Answer | None] | None = None,
    if_none_match: str | None,
    wait: float,
    max_seconds: float,
) -> tuple[Answer, str]:
    """The answer and its ETag, once it differs from `if_none_match`, or as it is when the wait ends.

    Args:
        read: reads the answer (blocking; run in the thread pool). Whatever it raises (e.g.
            the device was revoked meanwhile) ends the request.
        notifier: wakes the request when the device's answer may have changed.
        device_id: the device whose changes wake the request.
        first: the answer as the caller already read it, if it did: answered at once when it
            differs from `if_none_match`; otherwise read again once subscribed, since a
            change may have committed between that read and the subscription.
        peek: the answer as this process's cache holds it, or None (no I/O, in the event
            loop); tried before each `read`. Whatever invalidates it also wakes the request.
        if_none_match: the ETag the device already holds, if any.
        wait: how long the device is willing to wait (seconds).
        max_seconds: the hub's cap on `wait`.
    """

    async def fetch() -> tuple[Answer, str]:
        held = peek() if peek is not None else None
        answer = held if held is not None else await offload.call(read)
        return answer, etag(answer)

    duration = min(wait, max_seconds)
    if first is not None:
        tag = etag(first)
        if tag != if_none_match or duration <= 0:
            return first, tag
    elif if_none_match is None or duration <= 0:
        return await fetch()
    deadline = time.monotonic() + duration
    with notifier.subscribe(device_id) as changes:
        # Subscribed before this read: a change committed after it wakes the wait below.
        answer, tag = await fetch()
        while tag == if_none_match and (remaining := deadline - time.monotonic()) > 0:
            woken = await changes.wait(min(FALLBACK_SECONDS, remaining))
            if woken or remaining > FALLBACK_SECONDS:
                answer, tag = await fetch()
    return answer, tag


def respond(response: Response, answer: Answer, tag: str, if_none_match: str | None) -> Answer | Response:
    """The settled answer with its ETag `tag` in `response`'s headers; a bare 304 when the device holds it already."""
    if tag == if_none_match:
        return Response(status_code=304, headers={"ETag": tag})
    response.headers["ETag"] = tag
    return answer

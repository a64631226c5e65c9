"""The TUF fetcher of the agent (and of `edgefleet-tuf-client`): httpx, the device's token, resumable reads.

python-tuf's ngclient asks a `FetcherInterface` for URLs and bounds what it reads by the
signed lengths; this one sends the device's short-lived token, verifies the hub against
the fleet CA (through the given `httpx.Client`), and when a connection drops mid-body asks
again with ``Range: bytes=N-`` so a large artifact resumes instead of starting over.

With a `progress`, each chunk of a target file is reported (bytes received, the length the
server states), then the download's end, complete or not, so people can watch large
downloads (`agent.progress`).

With a `partial_dir`, what was received of a target file is also kept on disk, so a
download cut off for longer (the link is down, the agent restarts) resumes on the next
attempt. Only target URLs are kept that way: with consistent snapshots their names carry
their hash, so the same URL always means the same bytes. ngclient still checks the whole
file against its signed length and hash before anything uses it; a partial file is
removed once its download completes, so a bad one costs one failed attempt, never a use.
Only a lost connection keeps a partial file: a download its reader abandons (ngclient
refusing more bytes than signed) loses it, at once when the reader calls `discard_unfinished`.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.ngclient import FetcherInterface

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.client import AS_IS, encoded
from edgefleet.agent.progress import DownloadProgress

CHUNK = 64 * 1024

log = logging.getLogger(__name__)


class RangeIgnoredError(DownloadError):
    """The server answered a range request with the whole file."""


class HttpxFetcher(FetcherInterface):
    """Fetch over an `httpx.Client`, with a bearer token from `token` when given."""

    def __init__(
        self,
        http: httpx.Client,
        token: Callable[[], str] | None = None,
        *,
        partial_dir: Path | None = None,
        progress: DownloadProgress | None = None,
        bounds: Bounds = DEFAULT_BOUNDS,
    ) -> None:
        self._http = http
        self._token = token
        self._bounds = bounds
        self._resumes = bounds.download_resumes
        self._partial_dir = partial_dir
        self._progress = progress
        self._unfinished: set[Path] = set()
        self._downloads: weakref.WeakSet[Generator[bytes, None, None]] = weakref.WeakSet()
        """Downloads not yet read to their end: `discard_unfinished` closes them."""

    def _headers(self, offset: int) -> dict[str, str]:
        headers = dict(AS_IS)
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token()}"
        if offset:
            headers["Range"] = f"bytes={offset}-"
        return headers

    def _fetch(self, url: str) -> Iterator[bytes]:
        # Open the first response eagerly so HTTP errors surface from fetch(), as ngclient expects.
        partial = self._partial(url)
        kept = partial.stat().st_size if partial is not None and partial.exists() else 0
        if kept:
            try:
                first = self._open(url, kept)
            except DownloadHTTPError as exc:
                if exc.status_code != 416:
                    raise
                kept = 0
            except RangeIgnoredError:
                kept = 0  # start over (a lost connection keeps what was received for the next attempt)
            if not kept and partial is not None:
                partial.unlink(missing_ok=True)
                first = self._open(url, 0)
            else:
                log.info("resuming %s at byte %d (kept from an earlier attempt)", url, kept)
        else:
            first = self._open(url, 0)
        chunks = self._chunks(url, first, partial, kept)
        self._downloads.add(chunks)
        return chunks

    def _partial(self, url: str) -> Path | None:
        """Where a target's bytes are kept while it downloads (None: not kept)."""
        if self._partial_dir is None or "/targets/" not in url:
            return None
        self._partial_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._partial_dir / hashlib.sha256(url.encode()).hexdigest()[:32]

    def discard_unfinished(self) -> None:
        """Close the downloads still open and remove what was kept of them: their reader refused them (too long, say).

        Closed here, in the reader's thread, not whenever the garbage collector finds them.
        """
        for download in list(self._downloads):
            download.close()
        for partial in self._unfinished:
            partial.unlink(missing_ok=True)
        self._unfinished.clear()

    def _prune(self) -> None:
        if self._partial_dir is None:
            return
        kept = sorted(self._partial_dir.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[self._bounds.kept_partials :]:
            old.unlink(missing_ok=True)

    def _open(self, url: str, offset: int) -> httpx.Response:
        request = self._http.build_request("GET", url, headers=self._headers(offset))
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise DownloadError(f"cannot fetch {url}: {exc}") from exc
        expected = 206 if offset else 200
        if response.status_code != expected:
            _discard(response, self._bounds.refused_body_bytes)
            if offset and response.status_code == 200:
                raise RangeIgnoredError(f"{url}: the server ignored the range request")
            raise DownloadHTTPError(f"{url}: HTTP {response.status_code}", response.status_code)
        if (encoding := encoded(response)) is not None:  # its length would not be the signed length
            _discard(response, self._bounds.refused_body_bytes)
            raise DownloadError(f"{url}: encoded as {encoding!r}; the agent asks for files as they are")
        return response

    def _chunks(
        self, url: str, response: httpx.Response, partial: Path | None, kept: int
    ) -> Generator[bytes, None, None]:
        received = kept
        resumes = 0
        sink: BinaryIO | None = None
        report = self._progress if self._progress is not None and "/targets/" in url else None
        total = _total_length(response, kept)
        complete = False
        keep = False  # only a lost connection keeps what arrived, for the next attempt
        if partial is not None:
            self._unfinished.add(partial)
        try:
            if report is not None:
                report.update(url, received, total)
            if partial is not None:
                if kept:
                    with partial.open("rb") as earlier:
                        while chunk := earlier.read(CHUNK):
                            yield chunk
                sink = partial.open("ab")
                self._prune()
            while True:
                try:
                    for chunk in response.iter_bytes(CHUNK):
                        received += len(chunk)
                        if sink is not None:
                            sink.write(chunk)
                        if report is not None:
                            report.update(url, received, total)
                        yield chunk
                    complete = True
                    return
                except (httpx.TransportError, httpx.StreamError) as exc:
                    response.close()
                    resumes += 1
                    keep = True
                    if resumes > self._resumes:
                        raise DownloadError(f"{url}: connection lost after {received} bytes") from exc
                    if sink is not None:
                        sink.flush()
                    log.info("connection lost; resuming %s at byte %d", url, received)
                    response = self._open(url, received)
                    keep = False
        finally:
            response.close()
            if sink is not None:
                sink.close()
            if partial is not None:
                self._unfinished.discard(partial)
                if complete or not keep:
                    partial.unlink(missing_ok=True)
            if report is not None:
                report.end(url, complete=complete)


def _total_length(response: httpx.Response, offset: int) -> int | None:
    """The whole file's length as the server states it (None if it does not); only ever shown, never trusted."""
    length = response.headers.get("Content-Length", "")
    return offset + int(length) if length.isdigit() else None


def _discard(response: httpx.Response, limit: int) -> None:
    """Read a refused answer's body, up to `limit` bytes, and close it.

    An answer closed unread takes its connection with it, so the next request pays a new TLS
    handshake, on the hub too; TUF's refresh ends every time with a 404 (the next root
    version), so every update check did. A body larger than the bound goes with its connection.
    """
    received = 0
    try:
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > limit:
                break
    except httpx.HTTPError:
        pass  # the connection is dropped with the answer; the status is what the caller reports
    finally:
        response.close()

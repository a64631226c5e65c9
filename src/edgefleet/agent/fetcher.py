"""The TUF fetcher of the agent (and of `edgefleet-tuf-client`): httpx, the device's token, resumable reads.

python-tuf's ngclient asks a `FetcherInterface` for URLs and bounds what it reads by the
signed lengths; this one sends the device's short-lived token, verifies the hub against
the fleet CA (through the given `httpx.Client`), and when a connection drops mid-body asks
again with ``Range: bytes=N-`` so a large artifact resumes instead of starting over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.ngclient import FetcherInterface

CHUNK = 64 * 1024
RESUMES = 3


class HttpxFetcher(FetcherInterface):
    """Fetch over an `httpx.Client`, with a bearer token from `token` when given."""

    def __init__(self, http: httpx.Client, token: Callable[[], str] | None = None, *, resumes: int = RESUMES) -> None:
        self._http = http
        self._token = token
        self._resumes = resumes

    def _headers(self, offset: int) -> dict[str, str]:
        headers = {}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token()}"
        if offset:
            headers["Range"] = f"bytes={offset}-"
        return headers

    def _fetch(self, url: str) -> Iterator[bytes]:
        # Open the first response eagerly so HTTP errors surface from fetch(), as ngclient expects.
        first = self._open(url, 0)
        return self._chunks(url, first)

    def _open(self, url: str, offset: int) -> httpx.Response:
        request = self._http.build_request("GET", url, headers=self._headers(offset))
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise DownloadError(f"cannot fetch {url}: {exc}") from exc
        expected = 206 if offset else 200
        if response.status_code != expected:
            response.close()
            if offset and response.status_code == 200:
                raise DownloadError(f"{url}: the server ignored the range request")
            raise DownloadHTTPError(f"{url}: HTTP {response.status_code}", response.status_code)
        return response

    def _chunks(self, url: str, response: httpx.Response) -> Iterator[bytes]:
        received = 0
        resumes = 0
        try:
            while True:
                try:
                    for chunk in response.iter_bytes(CHUNK):
                        received += len(chunk)
                        yield chunk
                    return
                except (httpx.TransportError, httpx.StreamError) as exc:
                    response.close()
                    resumes += 1
                    if resumes > self._resumes:
                        raise DownloadError(f"{url}: connection lost after {received} bytes") from exc
                    response = self._open(url, received)
        finally:
            response.close()

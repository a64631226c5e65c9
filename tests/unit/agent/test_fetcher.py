"""The agent's TUF fetcher over real sockets: resumes a dropped download with Range, maps HTTP errors."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
from tuf.api.exceptions import DownloadError, DownloadHTTPError, DownloadLengthMismatchError

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.fetcher import HttpxFetcher

BODY = bytes(range(256)) * 4096  # 1 MiB


class Flaky(BaseHTTPRequestHandler):
    """Serves BODY with Range support; the first `drops` answers are cut off half-way."""

    drops = 0
    requests: ClassVar[list[str | None]] = []
    encodings: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        if self.path == "/missing":
            self.send_error(404)
            return
        if self.path == "/gzip":  # what a compressing proxy would send
            Flaky.encodings.append(self.headers.get("Accept-Encoding"))
            body = gzip.compress(BODY)
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/no-range") and self.headers.get("Range"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
            return
        Flaky.requests.append(self.headers.get("Range"))
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(BODY) - start))
        self.end_headers()
        if Flaky.drops > 0:
            Flaky.drops -= 1
            self.wfile.write(BODY[start : start + 300_000])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(BODY[start:])

    def log_message(self, *_args: object) -> None:
        pass


def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server with this handler while the generator is open; yields its URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def server() -> Iterator[str]:
    Flaky.requests, Flaky.encodings, Flaky.drops = [], [], 0  # nothing carried over from the test that ran before
    yield from serving(Flaky)


def test_dropped_download_resumes_with_range(server: str) -> None:
    Flaky.drops = 2
    with httpx.Client() as http:
        data = HttpxFetcher(http, lambda: "tok").download_bytes(f"{server}/blob", len(BODY))
    assert data == BODY
    assert Flaky.requests[0] is None
    assert len(Flaky.requests) == 3
    assert all(r is not None and r.startswith("bytes=") for r in Flaky.requests[1:])


def test_gives_up_after_its_resume_budget(server: str) -> None:
    Flaky.drops = 10
    with httpx.Client() as http, pytest.raises(DownloadError, match="connection lost"):
        HttpxFetcher(http, bounds=Bounds(download_resumes=2)).download_bytes(f"{server}/blob", len(BODY))


def test_http_errors_and_length_bound(server: str) -> None:
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http)
        with pytest.raises(DownloadHTTPError) as caught:
            fetcher.download_bytes(f"{server}/missing", 100)
        assert caught.value.status_code == 404
        with pytest.raises(DownloadLengthMismatchError):
            fetcher.download_bytes(f"{server}/blob", 1000)
        with pytest.raises(DownloadError):
            fetcher.download_bytes("http://127.0.0.1:9/none", 100)


def test_files_are_asked_for_as_they_are_and_a_compressed_one_is_refused(server: str) -> None:
    """A compressed answer's length is not the signed length, and a few KiB of it may expand to megabytes."""
    with httpx.Client() as http, pytest.raises(DownloadError, match="encoded as 'gzip'"):
        HttpxFetcher(http).download_bytes(f"{server}/gzip", len(BODY))
    assert Flaky.encodings == ["identity"]


def test_a_download_given_up_resumes_on_the_next_attempt_from_what_was_kept(server: str, tmp_path) -> None:
    partial = tmp_path / "partial"
    Flaky.drops = 10
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http, bounds=Bounds(download_resumes=1), partial_dir=partial)
        with pytest.raises(DownloadError, match="connection lost"):
            fetcher.download_bytes(f"{server}/targets/blob", len(BODY))
        (kept,) = partial.iterdir()
        size = kept.stat().st_size
        assert size > 0
        assert kept.read_bytes() == BODY[:size]
        Flaky.requests.clear()
        Flaky.drops = 0
        assert fetcher.download_bytes(f"{server}/targets/blob", len(BODY)) == BODY
    assert Flaky.requests == [f"bytes={size}-"]  # only the rest was asked for
    assert list(partial.iterdir()) == []  # nothing kept once complete


def test_a_download_refused_for_its_length_keeps_nothing(server: str, tmp_path) -> None:
    partial = tmp_path / "partial"
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http, partial_dir=partial)
        with pytest.raises(DownloadLengthMismatchError) as refused:
            fetcher.download_bytes(f"{server}/targets/blob", 1000)
        # The refusal is still being handled (its traceback holds the open download): nothing kept even so.
        fetcher.discard_unfinished()
        assert list(partial.iterdir()) == []
        del refused
        assert list(partial.iterdir()) == []
        # A reader that just drops the download (no discard) loses the partial when the download closes.
        chunks = fetcher.fetch(f"{server}/targets/blob")
        next(chunks)
        assert len(list(partial.iterdir())) == 1
        chunks.close()
        assert list(partial.iterdir()) == []


def test_discarding_closes_the_open_downloads_in_the_readers_thread(server: str, tmp_path) -> None:
    # Not when the garbage collector finds them: that may be another thread (an ASGI test client's loop).
    partial = tmp_path / "partial"
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http, partial_dir=partial)
        chunks = fetcher.fetch(f"{server}/targets/blob")
        assert next(chunks)
        finished = fetcher.fetch(f"{server}/targets/blob")
        assert b"".join(finished) == BODY
        fetcher.discard_unfinished()
        assert list(chunks) == []  # closed: its response too, and what it kept is gone
        assert list(partial.iterdir()) == []


def test_a_kept_partial_survives_an_attempt_that_cannot_connect(tmp_path) -> None:
    partial = tmp_path / "partial"
    url = "http://127.0.0.1:9/targets/blob"  # nothing listens: the link is still down
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http, partial_dir=partial)
        kept = fetcher._partial(url)
        assert kept is not None
        kept.write_bytes(BODY[:100])
        with pytest.raises(DownloadError):
            fetcher.download_bytes(url, len(BODY))
    assert kept.read_bytes() == BODY[:100]


def test_a_kept_partial_is_never_used_for_another_url_nor_for_metadata(server: str, tmp_path) -> None:
    partial = tmp_path / "partial"
    Flaky.drops = 10
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http, bounds=Bounds(download_resumes=0), partial_dir=partial)
        with pytest.raises(DownloadError):
            fetcher.download_bytes(f"{server}/1.root.json", len(BODY))
        assert not partial.exists() or list(partial.iterdir()) == []  # metadata is never kept
        with pytest.raises(DownloadError):
            fetcher.download_bytes(f"{server}/targets/a", len(BODY))
        Flaky.requests.clear()
        Flaky.drops = 0
        assert fetcher.download_bytes(f"{server}/targets/b", len(BODY)) == BODY
    assert Flaky.requests == [None]


def test_a_partial_the_server_will_not_continue_is_dropped_and_the_download_starts_over(server: str, tmp_path) -> None:
    partial = tmp_path / "partial"
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http, partial_dir=partial)
        url = f"{server}/no-range/targets/x"
        partial.mkdir()
        fetcher_path = fetcher._partial(url)
        fetcher_path.write_bytes(b"garbage that is not the start of the file")
        assert fetcher.download_bytes(url, len(BODY)) == BODY
    assert list(partial.iterdir()) == []


class Heard:
    """A DownloadProgress that keeps what it hears."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, int, int | None]] = []
        self.ends: list[tuple[str, bool]] = []

    def update(self, url: str, received: int, total: int | None) -> None:
        self.updates.append((url, received, total))

    def end(self, url: str, *, complete: bool) -> None:
        self.ends.append((url, complete))


def test_progress_hears_each_chunk_of_a_target_with_its_length_even_across_a_resume(server: str) -> None:
    heard = Heard()
    Flaky.drops = 1
    target = f"{server}/targets/abc.app.tar"
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http, progress=heard)
        assert b"".join(fetcher.fetch(target)) == BODY
        assert b"".join(fetcher.fetch(f"{server}/metadata/1.root.json")) == BODY  # metadata: not reported
    assert {url for url, _, _ in heard.updates} == {target}
    received = [got for _, got, _ in heard.updates]
    assert received == sorted(received)
    assert received[0] == 0
    assert received[-1] == len(BODY)
    assert {total for _, _, total in heard.updates} == {len(BODY)}
    assert heard.ends == [(target, True)]


def test_progress_hears_the_end_of_a_download_given_up(server: str) -> None:
    heard = Heard()
    Flaky.drops = 10
    target = f"{server}/targets/abc.app.tar"
    with httpx.Client() as http, pytest.raises(DownloadError, match="connection lost"):
        HttpxFetcher(http, bounds=Bounds(download_resumes=2), progress=heard).download_bytes(target, len(BODY))
    assert heard.ends == [(target, False)]  # a bar or a log line must not wait for it forever


class KeptAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; counts the connections it was asked on."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[int] = 0
    ANSWERS: ClassVar[dict[str, tuple[int, bytes]]] = {
        "/1.root.json": (200, b'{"signed": {}}'),
        "/2.root.json": (404, b'{"code": "not_found", "message": "no such version"}'),
        "/huge": (404, b"x" * (2 * DEFAULT_BOUNDS.refused_body_bytes)),
    }

    def setup(self) -> None:
        KeptAlive.connections += 1
        super().setup()

    def do_GET(self) -> None:
        status, body = self.ANSWERS.get(self.path, (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def kept_alive() -> Iterator[str]:
    KeptAlive.connections = 0
    yield from serving(KeptAlive)


def test_a_refused_answer_leaves_its_connection_for_the_next_request(kept_alive: str) -> None:
    # A TUF refresh ends with a 404 for the next root version: before the next check (or the next
    # file) the connection must still be there, not cost a new TLS handshake on both ends.
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http)
        for _ in range(3):
            assert fetcher.download_bytes(f"{kept_alive}/1.root.json", 1000) == b'{"signed": {}}'
            with pytest.raises(DownloadHTTPError):
                fetcher.download_bytes(f"{kept_alive}/2.root.json", 1000)
    assert KeptAlive.connections == 1


def test_a_refused_answers_large_body_is_not_read_to_its_end(kept_alive: str) -> None:
    with httpx.Client() as http:
        fetcher = HttpxFetcher(http)
        with pytest.raises(DownloadHTTPError):
            fetcher.download_bytes(f"{kept_alive}/huge", 1000)
        assert fetcher.download_bytes(f"{kept_alive}/1.root.json", 1000) == b'{"signed": {}}'
    assert KeptAlive.connections == 2  # that connection went with the answer

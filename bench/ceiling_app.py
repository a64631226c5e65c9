"""Benchmark helper: the ceiling of the hub's server stack, a minimal ASGI app served as `hub serve` serves the hub.

It answers every request with the same small JSON body, through uvicorn configured as
`edgefleet.hub.lifecycle.serve` configures it (TLS 1.2 or newer with the hub's certificate,
no access log, the same keep-alive and concurrency limit), so the difference between it and
the hub is the hub's own work per request. Used by bench/fleet_scale.py.

    .venv/bin/python bench/ceiling_app.py --data-dir HUB_DATA_DIR --bind 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import uvicorn
from starlette.types import Receive, Scope, Send

BODY = b'{"status":"ok"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """A fixed 200 with a small JSON body for every HTTP request; lifespan messages acknowledged."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def serve(data_dir: Path, *, host: str, port: int, long_poll_max_seconds: float, max_concurrent: int) -> None:
    """Serve `app` with the hub's TLS certificate and uvicorn settings (as in `lifecycle.serve`)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        ssl_certfile=str(data_dir / "tls.crt"),
        ssl_keyfile=str(data_dir / "tls.key"),
        timeout_graceful_shutdown=5,
        timeout_keep_alive=int(long_poll_max_seconds) + 5,
        limit_concurrency=max_concurrent,
    )
    config.load()
    if config.ssl is None:
        raise SystemExit("uvicorn did not build a TLS context")
    config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    uvicorn.Server(config).run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True, help="a hub data dir: its TLS certificate and key")
    parser.add_argument("--bind", default="127.0.0.1:8444")
    parser.add_argument("--long-poll-max-seconds", type=float, default=60.0)
    parser.add_argument("--max-concurrent", type=int, default=20_000)
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")
    serve(
        args.data_dir,
        host=host,
        port=int(port),
        long_poll_max_seconds=args.long_poll_max_seconds,
        max_concurrent=args.max_concurrent,
    )


if __name__ == "__main__":
    main()

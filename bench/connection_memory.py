"""Benchmark (issue 16 point 5): a served hub's resident memory per idle device connection.

A hub holds a TLS connection per device (its held poll; reports reuse or replace another).
This starts `edgefleet hub init` and `hub serve` (one process, SQLite), reads its RSS, opens
`--connections` TLS connections that each ask `/healthz` once and stay open (closing and
reopening every tenth on the way, as report connections come and go), and prints the
difference per connection. `--asyncio-default` serves with asyncio's own 256 KiB TLS read
buffers (`edgefleet.tlsbuffers` turned off) for the comparison. Medians of `--repeat` runs.

    .venv/bin/python bench/connection_memory.py --connections 1000 --repeat 3
    .venv/bin/python bench/connection_memory.py --connections 1000 --repeat 3 --asyncio-default
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleet_scale import cli, free_port, rss_bytes, stop, wait_ready

DEFAULT_BUFFERS = (
    "import edgefleet.tlsbuffers as t; t.limit_tls_read_buffers = lambda size=0: False; "
    "from edgefleet.cli.main import main; main()"
)
"""`edgefleet` with asyncio's TLS read buffers left as they are (imported before the hub's lifecycle)."""


def measure(connections: int, asyncio_default: bool) -> float:
    """KiB of hub RSS per open connection, for one fresh hub."""
    with tempfile.TemporaryDirectory(prefix="conn-memory-") as scratch:
        data_dir = Path(scratch) / "hub"
        cli("hub", "init", "--data-dir", str(data_dir), "--hostname", "hub.test")
        port = free_port()
        start = ["-c", DEFAULT_BUFFERS] if asyncio_default else ["-m", "edgefleet.cli.main"]
        log = (Path(scratch) / "hub.log").open("w")
        argv = [sys.executable, *start, "hub", "serve", "--data-dir", str(data_dir), "--bind", f"127.0.0.1:{port}"]
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            wait_ready(f"https://127.0.0.1:{port}", data_dir / "ca.crt", process, Path(scratch) / "hub.log")
            context = ssl.create_default_context(cafile=str(data_dir / "ca.crt"))
            time.sleep(1)
            before = rss_bytes(process.pid)
            held: list[ssl.SSLSocket] = []
            for index in range(connections + connections // 10):
                conn = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="hub.test")
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub.test\r\n\r\n")
                conn.recv(4096)
                held.append(conn)
                if index % 10 == 9 and len(held) > connections // 10:  # one in ten is replaced later
                    held.pop(0).close()
            time.sleep(2)
            grown = rss_bytes(process.pid) - before
            count = len(held)
            for conn in held:
                conn.close()
            return grown / count / 1024
        finally:
            stop(process)
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--asyncio-default", action="store_true", help="asyncio's 256 KiB TLS read buffers")
    args = parser.parse_args()
    figures = [measure(args.connections, args.asyncio_default) for _ in range(args.repeat)]
    buffers = "asyncio's 256 KiB" if args.asyncio_default else "16 KiB (edgefleet.tlsbuffers)"
    print(f"TLS read buffers: {buffers}; {args.connections} idle connections held, {args.repeat} runs")
    print(
        f"hub RSS per connection: median {statistics.median(figures):.0f} KiB (runs: "
        + ", ".join(f"{f:.0f}" for f in figures)
        + ")"
    )


if __name__ == "__main__":
    main()

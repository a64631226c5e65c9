"""Benchmark helper: a closed-loop HTTPS load generator, for the ceiling of bench/fleet_scale.py.

K keep-alive connections (one TLS context) each send the next request as soon as the last
answer is read, for `--seconds` after `--warmup`. It speaks just enough HTTP/1.1 on asyncio
streams (request line and headers out; status, headers and a Content-Length body in), so that
the generator costs far less CPU per request than the servers it measures: with httpx it was
the bottleneck. With `--state-dir` (a simulator's state directory) every request is signed as
one of its enrolled devices, as the agent signs (`agent.client.target_call`): a token minted per
device and reused, which the hub accepts while it is valid (a read does not spend a token; a
report, events or a renewal would, each token making at most one change).
Prints one JSON object: requests/s, statuses, transport errors, latency percentiles, the
generator's CPU seconds and (with `--server-pid`) the server's share of a core.

    .venv/bin/python bench/fleet_load.py --url https://127.0.0.1:PORT --ca CA --path /healthz
    .venv/bin/python bench/fleet_load.py --url ... --ca CA --device-target --state-dir SIM_STATE
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import resource
import ssl
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from edgefleet.agent.client import target_call
from edgefleet.agent.identity import load_identity
from edgefleet.protocol import API_PREFIX

SIGNING_DEVICES = 64
TICKS = os.sysconf("SC_CLK_TCK")


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def raw_request(host: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Accept: */*", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def device_requests(host: str, state_dir: Path) -> list[bytes]:
    """GET /device/target (no wait, no ETag) signed by up to SIGNING_DEVICES enrolled devices."""
    dirs = sorted((state_dir / "devices").iterdir())[:SIGNING_DEVICES]
    now = datetime.now(UTC)
    requests = []
    for data_dir in dirs:
        call = target_call(load_identity(data_dir))
        assert call.identity is not None
        query = f"?{urlencode(call.params)}" if call.params else ""
        headers = {**call.headers, "Authorization": f"Bearer {call.identity.token(now=now)}"}
        requests.append(raw_request(host, API_PREFIX + call.path + query, headers))
    return requests


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request, read its whole answer; its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def run(args: argparse.Namespace) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(args.ca))
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 443
    requests = (
        device_requests(url.netloc, args.state_dir) if args.device_target else [raw_request(url.netloc, args.path, {})]
    )
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    cycle = itertools.cycle(requests)
    start = time.monotonic()
    measure_from, end = start + args.warmup, start + args.warmup + args.seconds
    marks: dict[str, float] = {}

    async def connection() -> None:
        reader = writer = None
        while (sent := time.monotonic()) < end:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
                assert reader is not None
                status = await exchange(reader, writer, next(cycle))
            except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as exc:
                if sent >= measure_from:
                    errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            if sent >= measure_from:
                statuses[str(status)] += 1
                latencies.append(time.monotonic() - sent)
        if writer is not None:
            writer.close()

    async def mark() -> None:
        await asyncio.sleep(args.warmup)
        marks["cpu"] = _own_cpu()
        if args.server_pid:
            marks["server"] = cpu_seconds(args.server_pid)
        await asyncio.sleep(args.seconds)
        marks["cpu_end"] = _own_cpu()
        if args.server_pid:
            marks["server_end"] = cpu_seconds(args.server_pid)

    await asyncio.gather(mark(), *(connection() for _ in range(args.concurrency)))
    latencies.sort()
    done = sum(statuses.values())
    figures: dict[str, Any] = {
        "url": args.url,
        "what": f"GET {API_PREFIX}/device/target (signed, no wait)" if args.device_target else f"GET {args.path}",
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "requests": done,
        "requests_per_s": round(done / args.seconds, 1),
        "statuses": dict(statuses),
        "transport_errors": dict(errors),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(latencies[-1] if latencies else None),
        "loadgen_cpu_share": round((marks["cpu_end"] - marks["cpu"]) / args.seconds, 2),
    }
    if args.server_pid:
        figures["server_cpu_share"] = round((marks["server_end"] - marks["server"]) / args.seconds, 2)
    return figures


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--device-target", action="store_true", help="GET /api/v1/device/target signed by devices")
    parser.add_argument("--state-dir", type=Path, help="the simulator's state directory (enrolled devices)")
    parser.add_argument("--server-pid", type=int, help="the server process, for its CPU share")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    if args.device_target and args.state_dir is None:
        parser.error("--device-target needs --state-dir")
    json.dump(asyncio.run(run(args)), sys.stdout)
    print()


if __name__ == "__main__":
    main()

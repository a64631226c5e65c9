"""Benchmark helper: a closed-loop HTTPS load generator, for the ceiling of bench/fleet_scale.py.

K keep-alive connections (one TLS context) each send the next request as soon as the last
answer is read, for `--seconds` after `--warmup`. It speaks just enough HTTP/1.1 on asyncio
streams (request line and headers out; status, headers and a Content-Length body in), so that
the generator costs far less CPU per request than the servers it measures: with httpx it was
the bottleneck. With `--state-dir` (a simulator's state directory) every request is signed as
one of its enrolled devices, as the agent signs (`agent.client.target_call`): a token minted per
device and reused, which the hub accepts while it is valid (a read does not spend a token, nor
does a report that changes nothing; a change would, each token making at most one).
`--mode` picks the device request (`MODES`): a poll answered 200, a 304, a poll held for
`--wait` seconds that ends unchanged, or an unchanged state report.
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
import resource
import ssl
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from edgefleet.agent.client import report_call, target_call
from edgefleet.agent.identity import load_identity
from edgefleet.protocol import API_PREFIX

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_scale import tree_cpu  # the server's CPU over its process tree (a hub of N workers)

SIGNING_DEVICES = 64


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


MODES = {
    "target": "GET /device/target (signed, no wait, no ETag): 200",
    "not-modified": "GET /device/target with the current ETag, no wait: 304",
    "held": "GET /device/target with the current ETag, held for --wait seconds: 304",
    "report": "PATCH its twin's reported properties with what it holds already (unchanged)",
}


def raw_request(host: str, path: str, headers: dict[str, str], *, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: */*", *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def device_requests(url: str, ca: Path, state_dir: Path, *, mode: str = "target", wait: float = 0) -> list[bytes]:
    """The `mode`'s request signed by each of up to SIGNING_DEVICES enrolled devices.

    For `not-modified` and `held`, each device's current ETag is asked first; for `report`, each
    device's report is sent once, so that every measured one changes nothing.
    """
    host = urlsplit(url).netloc
    dirs = sorted((state_dir / "devices").iterdir())[:SIGNING_DEVICES]
    now = datetime.now(UTC)
    requests = []
    with httpx.Client(base_url=url + API_PREFIX, verify=ssl.create_default_context(cafile=str(ca))) as http:
        for data_dir in dirs:
            identity = load_identity(data_dir)
            bearer = {"Authorization": f"Bearer {identity.token(now=now)}"}
            if mode == "report":
                stated = {"os": f"bench {data_dir.name}"[:64], "agent_version": "bench", "apps": {}}
                call = report_call(identity, stated)
                body = json.dumps(call.json).encode()
                sent = {**bearer, "Content-Type": "application/json"}
                http.request(call.method, call.path, headers=sent, content=body).raise_for_status()
                requests.append(raw_request(host, API_PREFIX + call.path, bearer, method=call.method, body=body))
                continue
            etag = None
            if mode in ("not-modified", "held"):
                first = http.get(target_call(identity).path, headers=bearer)
                first.raise_for_status()
                etag = first.headers["etag"]
            call = target_call(identity, wait=wait if mode == "held" else 0, etag=etag)
            query = f"?{urlencode(call.params)}" if call.params else ""
            requests.append(raw_request(host, API_PREFIX + call.path + query, {**call.headers, **bearer}))
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(args.ca))
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 443
    mode = "target" if args.device_target else args.mode
    requests = (
        device_requests(args.url, args.ca, args.state_dir, mode=mode, wait=args.wait)
        if mode
        else [raw_request(url.netloc, args.path, {})]
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
            marks["server"] = tree_cpu(args.server_pid)
        await asyncio.sleep(args.seconds)
        marks["cpu_end"] = _own_cpu()
        if args.server_pid:
            marks["server_end"] = tree_cpu(args.server_pid)

    await asyncio.gather(mark(), *(connection() for _ in range(args.concurrency)))
    latencies.sort()
    done = sum(statuses.values())
    figures: dict[str, Any] = {
        "url": args.url,
        "what": MODES[mode] if mode else f"GET {args.path}",
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
        server_cpu = marks["server_end"] - marks["server"]
        figures["server_cpu_share"] = round(server_cpu / args.seconds, 2)
        figures["server_cpu_ms_per_request"] = round(server_cpu * 1000 / done, 3) if done else None
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
    parser.add_argument("--mode", choices=sorted(MODES), help="a device request, signed by devices (see MODES)")
    parser.add_argument("--wait", type=float, default=1.0, help="seconds a `held` poll asks to be held")
    parser.add_argument("--state-dir", type=Path, help="the simulator's state directory (enrolled devices)")
    parser.add_argument("--server-pid", type=int, help="the server process, for its CPU share")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    if (args.device_target or args.mode) and args.state_dir is None:
        parser.error("--device-target and --mode need --state-dir")
    json.dump(asyncio.run(run(args)), sys.stdout)
    print()


if __name__ == "__main__":
    main()

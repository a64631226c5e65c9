"""Benchmark: update transactions on real Podman: downtime per strategy, time back after a failed verdict, bytes.

Runs the agent's `Updater` (the same calls as tests/integration/agent/test_transaction.py)
against Podman's Docker-compatible API and a registry on this machine, with a one-service
app whose `web` answers its release's word (1.0.0 "one", 1.1.0 "two") over HTTP on port
8080. While an update runs, the host asks every running container of the app for its word
every 20 ms (their addresses on the app network, as the agent's TCP probes reach them).
Three measurements:

1. downtime per update strategy: from the last answer of 1.0.0 to the first of 1.1.0 (0
   when they overlap), and the longest silence while the update ran;
2. back after a failed health verdict: 1.1.0 never listens (its TCP probe fails), or exits
   at once; from the Updater's verdict (and from its ``rolling-back`` phase, the `fault`
   hook) to 1.0.0 answering again;
3. bytes: 1.0.0 and 1.1.0 share a busybox layer and a random padding layer and differ in
   one small top layer; the registry's log counts what the engine fetched for each pull,
   against the whole image and the OCI archive a bundled release carries.

Images differ per repetition, so every update downloads its top layer. Prints medians;
copy them into docs/benchmarks.md.

    .venv/bin/python bench/update_transactions.py [--repeat 5] [--window 2] [--padding-mib 8]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.agent.conftest import busybox_layer, docker_client, podman_service  # noqa: E402
from tests.integration.agent.test_engine import desired  # noqa: E402
from tests.integration.registry.conftest import (  # noqa: E402
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Registry,
    free_port,
    layer,
    run_registry,
)

from edgefleet.agent.engine.docker import APP, OWNER, DockerEngine, network_name  # noqa: E402
from edgefleet.agent.health import Verdict  # noqa: E402
from edgefleet.agent.journal import Journal, Transaction  # noqa: E402
from edgefleet.agent.plan import FetchImage  # noqa: E402
from edgefleet.agent.reconcile import reconcile  # noqa: E402
from edgefleet.agent.spec import ContainerSpec, HostFacts, release_specs  # noqa: E402
from edgefleet.agent.transaction import Outcome, Updater  # noqa: E402
from edgefleet.manifest import Release, parse_manifest  # noqa: E402
from edgefleet.publisher.registry import RegistryClient  # noqa: E402

STRATEGIES = ("download-then-kill", "kill-then-download", "hand-over")
WORDS = {"1.0.0": "one", "1.1.0": "two"}
PORT = 8080
POLL = 0.02
ASK_TIMEOUT = 0.25
SERVE = "echo {word} > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"
FAILURES = {
    "probe": "exec sleep 600",  # runs, never listens: its TCP probe fails twice, a second apart
    "exit": "exit 3",  # exits at once: the first look sees it exited or restarting
}
TCP_PROBE = "[{tcp: {port: 8080}, retries: 2, timeout: 1s}]"
REGISTRY_LOG = {"log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}}}
"""Info-level JSON lines: one "response completed" with http.response.written per request."""
TOP_LAYER_BYTES = 16 * 1024
MS = 1000


# --- images --------------------------------------------------------------------------


@dataclass
class Images:
    """Image pushes for one run: a shared busybox layer and padding layer, and one small top layer per image."""

    registry: Registry
    repo: str
    padding: int
    base: tuple[bytes, str] = field(init=False)
    pad: tuple[bytes, str] = field(init=False)

    def __post_init__(self) -> None:
        self.base = busybox_layer(self.repo)
        self.new_padding()

    def new_padding(self) -> None:
        """A fresh padding layer (random, so gzip keeps it at its size): later images share this one."""
        self.pad = layer({"opt/padding.bin": os.urandom(self.padding)})

    def push(self, marker: str) -> tuple[str, list[dict[str, Any]], int]:
        """An image whose top layer is its own; returns (reference by digest, [config, layers...], manifest size)."""
        top = layer({"opt/app/release": marker.encode() + os.urandom(TOP_LAYER_BYTES)})
        layers = [self.registry.push_blob(self.repo, data, OCI_LAYER) for data, _ in (self.base, self.pad, top)]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in (self.base, self.pad, top)]},
        }
        config_descriptor = self.registry.push_blob(self.repo, json.dumps(config).encode(), OCI_CONFIG)
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": layers}
        ).encode()
        manifest = self.registry.push_manifest(self.repo, marker, body, OCI_MANIFEST)
        return f"{self.registry.host}/{self.repo}@{manifest['digest']}", [config_descriptor, *layers], len(body)


def release(app: str, image: str, version: str, *, strategy: str, window: float, command: str | None = None) -> Release:
    command = command or SERVE.format(word=WORDS[version])
    return parse_manifest(f"""
services:
  web:
    image: {image}
    command: ["/bin/sh", "-c", "{command}"]
x-edgefleet:
  app: {app}
  version: {version}
  architectures: [amd64]
  update: {{strategy: {strategy}, health_window: {round(window * 1000)}ms}}
  services:
    web: {{resources: {{memory: 32m, cpus: 0.25, pids: 32}}, probes: {TCP_PROBE}}}
""")


# --- watching the service ----------------------------------------------------------------


def ask(address: str) -> str | None:
    """The word the web server at `address` answers, or None."""
    try:
        with socket.create_connection((address, PORT), timeout=ASK_TIMEOUT) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    return body.decode(errors="replace").strip() if status[1:2] == [b"200"] else None


class Watcher:
    """Asks every running container of one app for its word every POLL seconds, one thread per address.

    A discovery thread lists the app's running containers (every POLL seconds, its own
    engine client) and starts a poller for each new address; answers are (monotonic time, word).
    """

    def __init__(self, base_url: str, app: str) -> None:
        self.app = app
        self.answers: list[tuple[float, str]] = []
        self._client = docker.DockerClient(base_url=base_url, version="1.41", timeout=30)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._addresses: set[str] = set()

    def __enter__(self) -> Watcher:
        self._spawn(self._discover)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._client.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _discover(self) -> None:
        while not self._stop.is_set():
            with suppress(docker.errors.DockerException, OSError):
                for container in self._client.containers.list(sparse=True, filters={"label": f"{APP}={self.app}"}):
                    networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
                    address = (networks.get(network_name(self.app)) or {}).get("IPAddress")
                    if address and address not in self._addresses:
                        self._addresses.add(address)
                        self._spawn(self._poll, address)
            self._stop.wait(POLL)

    def _poll(self, address: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            word = ask(address)
            if word:
                self.answers.append((time.monotonic(), word))
            self._stop.wait(max(0.0, POLL - (time.monotonic() - started)))

    def wait_for(self, word: str, *, after: float = 0.0, timeout: float = 30) -> float:
        """When `word` was first answered at or after `after` (monotonic), waiting up to `timeout` for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = [t for t, w in list(self.answers) if w == word and t >= after]
            if seen:
                return min(seen)
            time.sleep(POLL)
        raise SystemExit(f"{self.app}: no answer {word!r} within {timeout:.0f}s")

    def median_gap(self) -> float:
        """The typical time between consecutive answers: how finely the watch resolves a silence."""
        times = sorted(t for t, _ in self.answers)
        return statistics.median(b - a for a, b in itertools.pairwise(times))

    def longest_silence(self, start: float, end: float) -> float:
        """The longest time between consecutive answers (any word) within [start, end]."""
        times = sorted(t for t, _ in self.answers if start <= t <= end)
        points = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(points))


# --- the updater ------------------------------------------------------------------------


class TimedUpdater(Updater):
    """An Updater that notes when its health verdict comes back, before it reads logs and journals rolling-back."""

    verdict_at: float | None = None

    def _probe(
        self, tx: Transaction, specs: Mapping[str, ContainerSpec], *, health_window: float, restart_limit: int
    ) -> Verdict:
        result = super()._probe(tx, specs, health_window=health_window, restart_limit=restart_limit)
        self.verdict_at = time.monotonic()
        return result


@dataclass
class Bench:
    """One Podman service, registry and engine owner for the whole run; apps named by the owner."""

    base_url: str
    engine: DockerEngine
    images: Images
    tmp: Path
    count: int = 0
    pulled: list[str] = field(default_factory=list)

    def app(self, stem: str) -> str:
        self.count += 1
        return f"{self.engine.owner}-{stem}-{self.count}"

    def install(self, app: str, image: str, *, strategy: str, window: float) -> Release:
        old = release(app, image, "1.0.0", strategy=strategy, window=window)
        reconcile(self.engine, desired(old))
        return old

    def update(self, new: Release, phases: dict[str, float], *, window: float) -> tuple[Outcome, TimedUpdater]:
        specs = {s.service: s for s in release_specs(new, facts=HostFacts(), environment={"FLEET": "lab"})}
        updater = TimedUpdater(
            self.engine,
            Journal(self.tmp / f"journal-{new.app}.db"),
            clock=lambda: datetime.now(UTC),
            sleep=time.sleep,
            fault=lambda phase: phases.setdefault(phase, time.monotonic()),
        )
        outcome = updater.update(
            new.app,
            specs,
            from_release="1.0.0",
            to_release=new.version,
            health_window=window,
            restart_limit=2,
            strategy=new.update.strategy,
        )
        return outcome, updater

    def remove_app(self, app: str) -> None:
        client = docker_client(self.engine)
        for container in client.containers.list(all=True, sparse=True, filters={"label": f"{APP}={app}"}):
            if (container.attrs.get("Labels") or {}).get(OWNER) == self.engine.owner:
                client.api.remove_container(container.id, force=True)
        for network in client.networks.list(filters={"label": f"{APP}={app}"}):
            if (network.attrs.get("Labels") or {}).get(OWNER) == self.engine.owner:
                network.remove()

    def remove_images(self) -> None:
        while self.pulled:
            with suppress(docker.errors.DockerException):
                docker_client(self.engine).images.remove(self.pulled.pop())


def downtime_run(bench: Bench, strategy: str, *, window: float) -> dict[str, float]:
    """Install 1.0.0, update to a working 1.1.0 with `strategy` while watching; figures in seconds."""
    app = bench.app("dt")
    old_image, _, _ = bench.images.push(f"{app}-1.0.0")
    new_image, _, _ = bench.images.push(f"{app}-1.1.0")
    bench.pulled += [old_image, new_image]
    try:
        bench.install(app, old_image, strategy=strategy, window=window)
        with Watcher(bench.base_url, app) as watcher:
            watcher.wait_for("one")
            time.sleep(0.3)
            phases: dict[str, float] = {}
            start = time.monotonic()
            outcome, _ = bench.update(
                release(app, new_image, "1.1.0", strategy=strategy, window=window), phases, window=window
            )
            end = time.monotonic()
            assert outcome.committed, outcome
            watcher.wait_for("two")
            time.sleep(0.3)
        first_new = min(t for t, w in watcher.answers if w == "two")
        last_old = max(t for t, w in watcher.answers if w == "one")
        return {
            "downtime": max(0.0, first_new - last_old),
            "overlap": max(0.0, last_old - first_new),
            "silence": watcher.longest_silence(start, end),
            "wall": end - start,
            "gap": watcher.median_gap(),
        }
    finally:
        bench.remove_app(app)
        bench.remove_images()


def rollback_run(bench: Bench, strategy: str, failure: str, *, window: float) -> dict[str, float]:
    """Install 1.0.0, update to a 1.1.0 that fails (FAILURES); time until 1.0.0 answers again."""
    app = bench.app("rb")
    old_image, _, _ = bench.images.push(f"{app}-1.0.0")
    bench.pulled.append(old_image)
    try:
        bench.install(app, old_image, strategy=strategy, window=window)
        with Watcher(bench.base_url, app) as watcher:
            watcher.wait_for("one")
            time.sleep(0.3)
            phases: dict[str, float] = {}
            start = time.monotonic()
            bad = release(app, old_image, "1.1.0", strategy=strategy, window=window, command=FAILURES[failure])
            outcome, updater = bench.update(bad, phases, window=window)
            returned = time.monotonic()
            assert outcome.status == "failed", outcome
            assert updater.verdict_at is not None
            hook = phases["rolling-back"]
            back = watcher.wait_for("one", after=hook)
            # Hand-over never stopped 1.0.0: its next answer after the verdict comes within a poll.
            back_from_verdict = watcher.wait_for("one", after=updater.verdict_at)
            time.sleep(0.3)
        return {
            "verdict_to_answer": back_from_verdict - updater.verdict_at,
            "hook_to_answer": back - hook,
            "verdict_to_hook": hook - updater.verdict_at,
            "rollback_call": returned - hook,
            "probing_to_verdict": updater.verdict_at - phases["probing"],
            "silence": watcher.longest_silence(start, back),
        }
    finally:
        bench.remove_app(app)
        bench.remove_images()


# --- bytes ------------------------------------------------------------------------------


def served(log: Path, offset: int) -> list[dict[str, Any]]:
    """Requests the registry completed since `offset` in its log (JSON lines)."""
    time.sleep(0.5)  # the registry logs a request once its response is written
    with log.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode().splitlines()
    entries = []
    for line in lines:
        with suppress(ValueError):
            entry = json.loads(line)
            if entry.get("msg") == "response completed":
                entries.append(entry)
    return entries


def bytes_run(bench: Bench, log: Path, registry_host: str) -> dict[str, Any]:
    """Pull 1.0.0 then 1.1.0 by reference (sharing all but the top layer); what the registry served for each."""
    bench.images.new_padding()  # layers no earlier run left in the engine's storage
    app = bench.app("bytes")
    old_image, old_blobs, _ = bench.images.push(f"{app}-1.0.0")
    new_image, new_blobs, new_manifest = bench.images.push(f"{app}-1.1.0")
    bench.pulled += [old_image, new_image]
    names = {}
    for version, blobs in (("1.0.0", old_blobs), ("1.1.0", new_blobs)):
        for what, blob in zip(("config", "busybox layer", "padding layer", "top layer"), blobs, strict=True):
            names[blob["digest"]] = what if what in ("busybox layer", "padding layer") else f"{what} {version}"
    figures: dict[str, Any] = {}
    try:
        for name, image in (("1.0.0", old_image), ("1.1.0", new_image)):
            offset = log.stat().st_size
            start = time.monotonic()
            bench.engine.execute(FetchImage(image), {})
            figures[f"pull {name} seconds"] = time.monotonic() - start
            entries = [e for e in served(log, offset) if e.get("http.request.method") == "GET"]
            figures[f"pull {name}"] = sum(int(e.get("http.response.written", 0)) for e in entries)
            figures[f"pull {name} requests"] = [
                (_requested(e["http.request.uri"], names), int(e.get("http.response.written", 0))) for e in entries
            ]
        figures["image"] = new_manifest + sum(b["size"] for b in new_blobs)
        figures["layers"] = [b["size"] for b in new_blobs[1:]]
        archive = bench.tmp / "bundle.tar"
        with RegistryClient(insecure=[registry_host]) as client:
            client.export(new_image, archive)
        figures["bundle"] = archive.stat().st_size
        archive.unlink()
    finally:
        bench.remove_images()
    return figures


def _requested(uri: str, names: Mapping[str, str]) -> str:
    if "/manifests/" in uri:
        return "manifest"
    if "/blobs/" in uri:
        return names.get(uri.rsplit("/", 1)[-1], "other blob")
    return "ping" if uri == "/v2/" else uri


# --- report -----------------------------------------------------------------------------


def spread(values: list[float], scale: float = MS, unit: str = "ms", digits: int = 0) -> str:
    def show(value: float) -> str:
        return f"{value * scale:.{digits}f}"

    middle, low, high = statistics.median(values), min(values), max(values)
    return f"median {show(middle)} {unit} (min {show(low)}, max {show(high)}, n={len(values)})"


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def main() -> None:  # one straight-line scenario
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--window", type=float, default=2.0, help="health window of each update, seconds")
    parser.add_argument("--padding-mib", type=float, default=8.0, help="random layer shared by both releases")
    args = parser.parse_args()
    owner = f"bench-{secrets.token_hex(3)}"
    # The directory goes last: it holds the engine's socket, which the cleanup still needs.
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        port = free_port()
        registry_host = stack.enter_context(run_registry(tmp, tmp / "registry", REGISTRY_LOG, port=port))
        registry = Registry(host=registry_host, storage=tmp / "registry")
        stack.callback(registry.http.close)
        podman = podman_service(tmp, registry_host)
        stack.callback(podman.wait, 10)
        stack.callback(podman.terminate)
        base_url = f"unix://{tmp / 'podman.sock'}"
        _wait_engine(base_url, podman)
        engine = DockerEngine(base_url, owner=owner)
        stack.callback(engine.close)
        bench = Bench(base_url, engine, Images(registry, f"{owner}/app", int(args.padding_mib * 2**20)), tmp)
        stack.callback(bench.remove_images)  # after the containers that use them (callbacks run last first)
        stack.callback(_cleanup, engine)

        print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
        print(
            f"owner {owner}; health window {args.window:g}s; {args.repeat} runs each; polling every {POLL * MS:.0f} ms"
        )
        downtime: dict[str, list[dict[str, float]]] = {s: [] for s in STRATEGIES}
        rollback: dict[tuple[str, str], list[dict[str, float]]] = {(s, f): [] for s in STRATEGIES for f in FAILURES}
        for _ in range(args.repeat):  # interleaved, so a burst of load elsewhere does not hit one strategy only
            for strategy in STRATEGIES:
                downtime[strategy].append(downtime_run(bench, strategy, window=args.window))
                for failure in FAILURES:
                    rollback[strategy, failure].append(rollback_run(bench, strategy, failure, window=args.window))
        report_downtime(downtime)
        report_rollback(rollback)
        report_bytes(bytes_run(bench, tmp / f"registry-{port}.log", registry_host))


def report_downtime(downtime: dict[str, list[dict[str, float]]]) -> None:
    gap = statistics.median(r["gap"] for runs in downtime.values() for r in runs)
    print(f"\n1. downtime per strategy (last answer of 1.0.0 -> first of 1.1.0; answers every {gap * MS:.0f} ms):")
    for strategy, runs in downtime.items():
        print(f"  {strategy}: {spread([r['downtime'] for r in runs])}")
        print(f"    longest silence while updating {spread([r['silence'] for r in runs])}")
        print(f"    both releases answering for {spread([r['overlap'] for r in runs])}")
        print(f"    update() call {spread([r['wall'] for r in runs], 1, 's', 2)}")
    print("  summary: downtime " + "; ".join(f"{s} {_median(r, 'downtime')}" for s, r in downtime.items()))


def report_rollback(rollback: dict[tuple[str, str], list[dict[str, float]]]) -> None:
    print("\n2. failed verdict -> 1.0.0 answering again (probe: 1.1.0 never listens; exit: 1.1.0 exits at once):")
    for (strategy, failure), runs in rollback.items():
        print(f"  {strategy}, {failure}: from the verdict {spread([r['verdict_to_answer'] for r in runs])}")
        print(f"    from the rolling-back phase (fault hook) {spread([r['hook_to_answer'] for r in runs])}")
        print(f"    verdict -> rolling-back journaled (logs read) {spread([r['verdict_to_hook'] for r in runs])}")
        print(f"    rollback() from the hook to its return {spread([r['rollback_call'] for r in runs])}")
        print(f"    probing -> failed verdict {spread([r['probing_to_verdict'] for r in runs])}")
        print(f"    longest silence from the update's start {spread([r['silence'] for r in runs])}")
    worst = max(r["verdict_to_answer"] for runs in rollback.values() for r in runs)
    medians = "; ".join(f"{s} {f} {_median(r, 'verdict_to_answer')}" for (s, f), r in rollback.items())
    print(f"  summary: back on 1.0.0 after the verdict: {medians}; worst {worst:.2f} s (target < 5 s)")


def report_bytes(figures: dict[str, Any]) -> None:
    print("\n3. bytes for an update that changes one layer (registry log, GET responses):")
    print(f"  layers of 1.1.0 (compressed): {', '.join(kib(n) for n in figures['layers'])}")
    for name in ("1.0.0", "1.1.0"):
        shown = ", ".join(f"{what} {kib(n)}" for what, n in figures[f"pull {name} requests"])
        print(f"  pull {name}: {kib(figures[f'pull {name}'])} in {figures[f'pull {name} seconds']:.2f}s: {shown}")
    print(f"  whole image 1.1.0 (manifest, config, layers): {kib(figures['image'])}")
    print(f"  bundled release (OCI archive, as `release build --bundle` exports it): {kib(figures['bundle'])}")
    print(
        f"  summary: the update downloads {kib(figures['pull 1.1.0'])} from the registry, "
        f"{figures['pull 1.1.0'] / figures['bundle'] * 100:.2f}% of the {kib(figures['bundle'])} a bundle carries"
    )


def _median(runs: list[dict[str, float]], key: str) -> str:
    return f"{statistics.median(r[key] for r in runs) * MS:.0f} ms"


def _wait_engine(base_url: str, podman: Any) -> None:
    deadline = time.monotonic() + 30
    while True:
        with suppress(docker.errors.DockerException, requests.exceptions.RequestException):
            client = docker.DockerClient(base_url=base_url, version="1.41", timeout=5)
            try:
                client.ping()
                return
            finally:
                client.close()
        if podman.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("podman system service did not start")
        time.sleep(0.1)


def _cleanup(engine: DockerEngine) -> None:
    """Whatever this run's owner made and a failure left behind."""
    client = docker_client(engine)
    mine = {"label": f"{OWNER}={engine.owner}"}
    for container in client.containers.list(all=True, sparse=True, filters=mine):
        if (container.attrs.get("Labels") or {}).get(OWNER) == engine.owner:
            client.api.remove_container(container.id, force=True)
    for network in client.networks.list(filters=mine):
        if (network.attrs.get("Labels") or {}).get(OWNER) == engine.owner:
            network.remove()


if __name__ == "__main__":
    main()

"""Network loss with real isolation: the agent runs in its own network namespace, joined to the hub
by a veth pair that the test cuts and restores.

The hub serves a bundled release (its image travels as a signed OCI archive over the veth, at
a rate `tc` limits so the cut lands mid-download). Cut mid-download: the download resumes
from where it stopped (bytes over the link stay under twice the artifact) and the release
commits. Cut while the new release is being judged: the agent commits on its own, keeps its
outcome on disk across an agent restart, leaves the containers alone, and delivers the
outcomes in order once the link is back.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgefleet.agent.engine.docker import DockerEngine
from tests.e2e.conftest import RunningHub, edgefleet, start_hub
from tests.integration.agent.conftest import app_name, busybox_layer
from tests.integration.agent.test_agent_runner import app_text
from tests.integration.agent.test_engine import containers, wait_running
from tests.integration.registry.conftest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Registry, sha256

pytestmark = [pytest.mark.xdist_group("podman"), pytest.mark.slow]

PADDING = 4 * 1024 * 1024
"""Incompressible bytes in each release's image, so the download lasts a few seconds at RATE."""
RATE = "8mbit"


def sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


@dataclass
class Link:
    """A veth pair: `host` stays here (address .1), its peer lives in namespace `netns` (address .2)."""

    netns: str
    host: str
    hub_address: str

    def sent(self) -> int:
        """Bytes the host side has sent towards the device."""
        return int(Path(f"/sys/class/net/{self.host}/statistics/tx_bytes").read_text())

    def cut(self) -> None:
        sh("ip", "link", "set", self.host, "down")

    def restore(self) -> None:
        sh("ip", "link", "set", self.host, "up")


@pytest.fixture
def link() -> Iterator[Link]:
    tag = secrets.token_hex(3)
    subnet = 1 + int(tag, 16) % 250
    made = Link(netns=f"ef-{tag}", host=f"efh{tag}", hub_address=f"10.213.{subnet}.1")
    device_side = f"efd{tag}"
    sh("ip", "netns", "add", made.netns)
    try:
        sh("ip", "link", "add", made.host, "type", "veth", "peer", "name", device_side)
        sh("ip", "link", "set", device_side, "netns", made.netns)
        sh("ip", "addr", "add", f"{made.hub_address}/30", "dev", made.host)
        sh("ip", "link", "set", made.host, "up")
        inside = ("ip", "netns", "exec", made.netns)
        sh(*inside, "ip", "addr", "add", f"10.213.{subnet}.2/30", "dev", device_side)
        sh(*inside, "ip", "link", "set", device_side, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        # Downloads (hub -> device) at a modest rate, as over a constrained uplink.
        sh("tc", "qdisc", "add", "dev", made.host, "root", "tbf", "rate", RATE, "burst", "32kbit", "latency", "400ms")
        yield made
    finally:
        subprocess.run(["ip", "link", "del", made.host], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", made.netns], capture_output=True, check=False)


def push_padded(registry: Registry, marker: str) -> str:
    """A busybox image with a layer of random bytes on top; returns it pinned by digest."""
    repo = "edgefleet-test/padded"
    base, base_id = busybox_layer(marker)
    padding = os.urandom(PADDING)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo("padding.bin")
        info.size = len(padding)
        archive.addfile(info, io.BytesIO(padding))
    layers = [
        registry.push_blob(repo, base, OCI_LAYER),
        registry.push_blob(repo, raw.getvalue(), "application/vnd.oci.image.layer.v1.tar"),
    ]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [base_id, sha256(raw.getvalue())]},
    }
    config_descriptor = registry.push_blob(repo, json.dumps(config).encode(), OCI_CONFIG)
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": layers}
    ).encode()
    manifest = registry.push_manifest(repo, marker, body, OCI_MANIFEST)
    return f"{registry.host}/{repo}@{manifest['digest']}"


@dataclass
class IsolatedDevice:
    hub: RunningHub
    link: Link
    config: Path
    data_dir: Path
    app: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    id: str = ""

    def start(self) -> None:
        """`edgefleet agent run` inside the device's namespace (its engine socket is a file, shared)."""
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [
                    *("ip", "netns", "exec", self.link.netns),
                    *(sys.executable, "-m", "edgefleet.cli.main", "agent", "run", "--config", str(self.config)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def phase(self) -> str | None:
        """The phase of the latest update transaction in the device's journal."""
        try:
            with sqlite3.connect(f"file:{self.data_dir / 'journal.db'}?mode=ro", uri=True, timeout=5) as db:
                row = db.execute("SELECT phase, to_release FROM transactions ORDER BY id DESC LIMIT 1").fetchone()
        except sqlite3.OperationalError:
            return None
        return f"{row[0]} {row[1]}" if row else None

    def audited(self) -> list[dict[str, Any]]:
        """The device's update outcomes in the hub's audit log, in the order the hub recorded them."""
        return self.hub.update_outcomes(self.id)


def wait_for(what: str, check: Callable[[], bool], *, timeout: float = 90, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(every)


@pytest.fixture
def device(
    tmp_path: Path, link: Link, engine_socket: str, test_registry: Registry, apps: list[str]
) -> Iterator[IsolatedDevice]:
    """An agent in its own namespace, enrolled with a hub reachable only over the veth."""
    hub_process = start_hub(tmp_path, None, bind=link.hub_address)
    hub = next(hub_process)
    keys = tmp_path / "keys"
    assert edgefleet("keys", "init", "--dir", str(keys)).returncode == 0
    assert hub.cli("repo", "init", "--keys", str(keys)).returncode == 0
    app = app_name(apps, "offline")
    for version in ("1.0.0", "1.1.0"):
        source = tmp_path / f"app-{version}"
        source.mkdir()
        text = app_text(app, version, push_padded(test_registry, f"{app}-{version}"), web_env=version)
        (source / "compose.yaml").write_text(text.replace("health_window: 2s", "health_window: 6s"))
        bundled = ("--bundle", "--insecure-registry", test_registry.host)
        published = hub.cli("release", "publish", str(source), "--keys", str(keys), *bundled)
        assert published.returncode == 0, published.stderr
    token = json.loads(hub.cli("token", "create", "--fleet", "lab", "--json").stdout)["token"]
    (tmp_path / "policy.toml").write_text('allow = ["network"]\n')
    data_dir = tmp_path / "dev"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'hub_url = "{hub.url}"\nca = "{hub.ca}"\nenrollment_token = "{token}"\ndata_dir = "{data_dir}"\n'
        f'engine = "{engine_socket}"\npolicy = "{tmp_path / "policy.toml"}"\narch = "amd64"\n'
        "poll_wait = 1\nrequest_timeout = 3\nbackoff_initial = 0.2\nbackoff_max = 1\n"
        f'repository_root = "{keys / "repository" / "root.json"}"\n'
    )
    made = IsolatedDevice(hub, link, config, data_dir, app, tmp_path / "agent.log")
    made.start()
    try:
        wait_for("enrollment", lambda: bool(json.loads(hub.cli("device", "list", "--json").stdout)), every=0.5)
        listed = json.loads(hub.cli("device", "list", "--json").stdout)
        made.id = listed[0]["id"]
        yield made
    finally:
        made.stop()
        next(hub_process, None)
        print(made.log.read_text()[-5000:])


def test_cut_links_mid_download_and_mid_report_recover_without_restarting_anything(
    device: IsolatedDevice, engine_socket: str
) -> None:
    engine = DockerEngine(engine_socket, owner=device.id)
    hub, link = device.hub, device.link
    assert hub.cli("device", "assign", device.id, f"{device.app}@1.0.0").returncode == 0
    wait_for("1.0.0 committed", lambda: device.phase() == "committed 1.0.0")
    wait_running(engine, device.app, 2)
    wait_for("the 1.0.0 outcome at the hub", lambda: len(device.audited()) == 1, every=0.5)
    artifact = max(p.stat().st_size for p in (hub.data_dir / "artifacts").rglob("*") if p.is_file())
    assert artifact > PADDING

    # Cut mid-download: the link goes down once part of the artifact has crossed it.
    before = link.sent()
    assert hub.cli("device", "assign", device.id, f"{device.app}@1.1.0").returncode == 0
    wait_for("the download to be under way", lambda: link.sent() - before > artifact // 3, every=0.01)
    link.cut()
    time.sleep(6)
    assert device.phase() == "committed 1.0.0"  # nothing started on a partial download
    link.restore()

    # Cut again while the new release is being judged: the outcome cannot be reported.
    wait_for("1.1.0 under judgement", lambda: device.phase() == "probing 1.1.0", timeout=120, every=0.02)
    link.cut()
    sent = link.sent() - before
    assert sent < 2 * artifact, f"{sent} bytes over the link for a {artifact}-byte artifact"
    wait_for("1.1.0 committed offline", lambda: device.phase() == "committed 1.1.0")
    wait_running(engine, device.app, 2)
    running = {name: (c.id, c.attrs["State"]["StartedAt"]) for name, c in containers(engine, device.app).items()}
    assert {c.labels["io.edgefleet.release"] for c in containers(engine, device.app).values()} == {"1.1.0"}
    time.sleep(4)  # a few failed deliveries
    assert [e["detail"]["to_release"] for e in device.audited()] == ["1.0.0"]

    # The agent restarts while offline: the workload is left alone and the outcome kept on disk.
    device.stop()
    device.start()
    time.sleep(6)
    assert {name: (c.id, c.attrs["State"]["StartedAt"]) for name, c in containers(engine, device.app).items()} == (
        running
    )
    link.restore()
    wait_for("the buffered outcome at the hub", lambda: len(device.audited()) == 2, every=0.5)
    outcomes = device.audited()
    assert [(e["action"], e["detail"]["to_release"]) for e in outcomes] == [
        ("device.update.committed", "1.0.0"),
        ("device.update.committed", "1.1.0"),
    ]
    assert outcomes[0]["detail"]["seq"] < outcomes[1]["detail"]["seq"]
    state = json.loads(hub.cli("device", "show", device.id, "--json").stdout)
    assert state["updates"][device.app]["to_release"] == "1.1.0"
    assert {name: (c.id, c.attrs["State"]["StartedAt"]) for name, c in containers(engine, device.app).items()} == (
        running
    )
    log = device.log.read_text()
    assert "resuming" in log, log[-3000:]
    engine.close()

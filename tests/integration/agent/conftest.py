"""Real engines for agent tests: Podman's Docker-compatible service and a Docker Engine of our own, a registry, busybox.

Podman's storage is the machine's, so every test works on apps named for it alone, with an
engine owner label of its own, and removes what it made. The session's plain-HTTP registry
is marked insecure only for this session's Podman service (CONTAINERS_REGISTRIES_CONF).

Docker Engine (Debian's `docker.io`, 20.10) runs as a `dockerd` of the session's own: its
socket, data root and exec root under the session's directory, no default bridge, and
address pools of its own (`docker_pool`), so it never meets another worker's or the
machine's networks. `engine_socket` is either engine, by parameter: a test that takes it
runs on both, in the xdist group of each engine (one engine's tests at a time per worker).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from edgefleet.agent.engine.docker import APP, DockerEngine
from edgefleet.demo.engines import DOCKERD, dockerd_command, dockerd_start_lock, remove_leftovers
from edgefleet.demo.image import busybox_layer as demo_layer
from tests.integration.registry.conftest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Registry, run_registry

PODMAN = shutil.which("podman") or "/usr/bin/podman"
ENGINES = ("podman", "docker")
"""The engines every engine-level test runs on (`engine_socket`)."""
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "echo", "cat", "nc", "wget", "httpd", "ls", "env", "true", "id", "touch", "grep", "test")


def podman_service(root: Path, registry_host: str) -> subprocess.Popen[bytes]:
    """`podman system service` on ROOT/podman.sock, trusting the plain-HTTP registry at `registry_host`."""
    registries = root / "registries.conf"
    registries.write_text(f'[[registry]]\nlocation = "{registry_host}"\ninsecure = true\n')
    with (root / "service.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [PODMAN, "system", "service", "--time=0", f"unix://{root / 'podman.sock'}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries)},
        )


@pytest.fixture(scope="session")
def podman_socket(tmp_path_factory: pytest.TempPathFactory, test_registry: Registry) -> Iterator[str]:
    """`podman system service` on a socket of this session's."""
    if not Path(PODMAN).exists():
        pytest.fail("podman is missing: scripts/setup installs it")
    root = tmp_path_factory.mktemp("podman")
    process = podman_service(root, test_registry.host)
    url = f"unix://{root / 'podman.sock'}"
    try:
        wait_for_engine(url, process, root / "service.log", "podman system service")
        yield url
    finally:
        stop(process)


def docker_pool() -> str:
    """Address pool for this worker's dockerd: 10.{200+N}.0.0/16 for xdist worker N, in /24 networks."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return f"base=10.{200 + int(worker or 0) % 50}.0.0/16,size=24"


def wait_for_engine(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if Path(url.removeprefix("unix://")).exists():
            try:
                client = docker.DockerClient(base_url=url, version="1.41", timeout=5)
                client.ping()
                client.close()
                return
            except (docker.errors.DockerException, requests.exceptions.ConnectionError):
                pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def docker_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `dockerd` of this session's; removed with everything it made when the session ends."""
    if not Path(DOCKERD).exists():
        pytest.fail("dockerd is missing: scripts/setup installs docker.io")
    root = Path(tempfile.mkdtemp(prefix="efd-", dir="/tmp"))  # unix socket paths must stay short
    command = dockerd_command(root, exec_root=root / "exec", address_pool=docker_pool())
    with dockerd_start_lock():  # every dockerd shares iptables' chains: two starting at once race to make them
        with (root / "dockerd.log").open("wb") as log:
            process = subprocess.Popen(command.argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_engine(command.url, process, root / "dockerd.log", "dockerd")
        except BaseException:
            stop(process)
            raise
    try:
        yield command.url
    finally:
        stop(process)
        remove_leftovers(command)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(
    scope="session",
    params=[pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in ENGINES],
)
def engine_socket(request: pytest.FixtureRequest) -> str:
    """The API socket of the engine this test runs on (every engine in `ENGINES`, by parameter)."""
    url: str = request.getfixturevalue(f"{request.param}_socket")
    return url


@pytest.fixture
def engine_name(engine_socket: str, request: pytest.FixtureRequest) -> str:
    """Which engine `engine_socket` is, for the few checks that differ between engines (each says why)."""
    name: str = request.node.callspec.params["engine_socket"]
    return name


@pytest.fixture(scope="session")
def test_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("pull-registry")
    with run_registry(root, root / "storage") as host:
        registry = Registry(host=host, storage=root / "storage")
        yield registry
        registry.http.close()


def busybox_layer(marker: str) -> tuple[bytes, str]:
    """The demo's busybox layer with the test applets and a marker file (so each image has its own digest)."""
    return demo_layer(BUSYBOX, applets=APPLETS, files={"etc/image": marker.encode()})


def push_busybox(registry: Registry, marker: str) -> str:
    """A static-busybox image in the registry; returns it pinned by digest."""
    repo = "edgefleet-test/busybox"
    layer, diff_id = busybox_layer(marker)
    layer_descriptor = registry.push_blob(repo, layer, OCI_LAYER)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_descriptor = registry.push_blob(repo, json.dumps(config).encode(), OCI_CONFIG)
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": [layer_descriptor]}
    ).encode()
    manifest = registry.push_manifest(repo, marker, body, OCI_MANIFEST)
    return f"{registry.host}/{repo}@{manifest['digest']}"


@pytest.fixture(scope="session")
def busybox(test_registry: Registry) -> str:
    if not BUSYBOX.exists():
        pytest.fail("/bin/busybox is missing: scripts/setup installs busybox-static")
    return push_busybox(test_registry, "main")


@pytest.fixture
def apps(engine_socket: str) -> Iterator[list[str]]:
    """Unique app names for one test; whatever the agent made for them is removed afterwards."""
    names: list[str] = []
    yield names
    client = docker.DockerClient(base_url=engine_socket, version="1.41", timeout=60)
    try:
        # Only this test's apps (one label per filter, checked again: Podman's volume listing ignores
        # a list of label filters), so other workers' objects are never touched.
        for name in names:
            mine = {"label": f"{APP}={name}"}
            for container in client.containers.list(all=True, sparse=True, filters=mine):
                if (container.attrs.get("Labels") or {}).get(APP) == name:
                    client.api.remove_container(container.id, force=True)
            for network in client.networks.list(filters=mine):
                if (network.attrs.get("Labels") or {}).get(APP) == name:
                    network.remove()
            for volume in client.volumes.list(filters=mine):
                if (volume.attrs.get("Labels") or {}).get(APP) == name:
                    volume.remove(force=True)
    finally:
        client.close()


@pytest.fixture
def engine(engine_socket: str, apps: list[str]) -> Iterator[DockerEngine]:
    instance = DockerEngine(engine_socket, owner=f"test-{secrets.token_hex(4)}")
    yield instance
    instance.close()


_CLIENTS: dict[str, docker.DockerClient] = {}


def docker_client(engine: DockerEngine) -> docker.DockerClient:
    """docker-py on `engine`'s socket, for a test's own look at the engine (the agent speaks the API itself)."""
    if engine.base_url not in _CLIENTS:
        _CLIENTS[engine.base_url] = docker.DockerClient(base_url=engine.base_url, version="1.41", timeout=120)
    return _CLIENTS[engine.base_url]


def pin_bridge_mac(engine: DockerEngine, network: str) -> None:
    """Give `network`'s bridge a fixed MAC address, as netavark 1.9 and later do by themselves.

    Netavark before 1.9 (Debian 12 has 1.4) leaves the kernel's default: a bridge takes the lowest
    MAC of its ports, so starting or removing a container can change it, and the other containers
    cannot reach the gateway (their DNS server) until their ARP entry expires, up to a minute.
    """
    gateway = docker_client(engine).networks.get(network).attrs["IPAM"]["Config"][0]["Gateway"]
    links = json.loads(subprocess.run(["ip", "-j", "addr"], check=True, capture_output=True).stdout)
    bridge = next(link for link in links if any(a.get("local") == gateway for a in link.get("addr_info", [])))
    subprocess.run(["ip", "link", "set", "dev", bridge["ifname"], "address", bridge["address"]], check=True)


def app_name(apps: list[str], stem: str) -> str:
    name = f"{stem}-{secrets.token_hex(3)}"
    apps.append(name)
    return name

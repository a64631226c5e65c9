"""The agent's engine adapter and reconciler on real Podman (Docker-compatible API): confinement,
minimal recreation, volumes across updates, isolation between apps, and never touching others' objects."""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from edgefleet.agent.engine.docker import API_VERSION, MANAGED, DockerEngine
from edgefleet.agent.engine.info import api_level
from edgefleet.agent.errors import EngineError
from edgefleet.agent.hostpaths import protected_paths
from edgefleet.agent.plan import CreateContainer
from edgefleet.agent.policy import Policy, parse_policy
from edgefleet.agent.reconcile import Desired, PermissionRefusedError, reconcile
from edgefleet.agent.spec import HostFacts, release_specs
from edgefleet.manifest import Permission, Release, parse_manifest
from tests.integration.agent.conftest import PODMAN, app_name, docker_client, push_busybox
from tests.integration.agent.images import configs, export, forget, image_ids
from tests.integration.registry.conftest import Registry

pytestmark = pytest.mark.xdist_group("podman")

ALLOW_ALL = parse_policy('allow = ["network", "network-bind:*", "host-read:*"]')


def manifest(
    app: str,
    image: str,
    *,
    version: str = "1.0.0",
    web_env: str = "MODE: one",
    db_env: str = "V: '1'",
    port: int | None = None,
    permissions: str = "[]",
) -> Release:
    ports = f'    ports: ["127.0.0.1:{port}:8080"]\n' if port else ""
    web_permissions = f'["network-bind:{port}"]' if port else permissions
    return parse_manifest(f"""
services:
  db:
    image: {image}
    command: ["/bin/sh", "-c", "echo db > /data/hello; while true; do nc -l -p 8080 < /data/hello; done"]
    environment: {{{db_env}}}
    volumes: ["data:/data"]
  web:
    image: {image}
    command: ["/bin/sh", "-c", "while true; do echo web | nc -l -p 8080; done"]
    environment: {{{web_env}}}
    depends_on: [db]
{ports}volumes: {{data: }}
x-edgefleet:
  app: {app}
  version: {version}
  architectures: [amd64]
  services:
    db:
      resources: {{memory: 32m, cpus: 0.25, pids: 32}}
    web:
      resources: {{memory: 48m, cpus: 0.5, pids: 64}}
      permissions: {web_permissions}
""")


def desired(*releases: Release, policy: Policy = ALLOW_ALL) -> Desired:
    return Desired(
        releases={r.app: r for r in releases}, policy=policy, facts=HostFacts(), environment={"FLEET": "lab"}
    )


def containers(engine: DockerEngine, app: str) -> dict[str, docker.models.containers.Container]:
    """The app's containers by service; a container removed while listing (an agent at work) is listed again."""
    for _ in range(10):
        try:
            found = docker_client(engine).containers.list(
                all=True, filters={"label": [f"{MANAGED}=true", f"io.edgefleet.app={app}"]}
            )
        except docker.errors.APIError as exc:  # NotFound, or Podman's 500 "does not exist in database"
            if exc.status_code != 404 and "no such container" not in str(exc):
                raise
            time.sleep(0.1)
            continue
        return {c.labels["io.edgefleet.service"]: c for c in found}
    pytest.fail(f"{app}: containers kept vanishing while listed")


def sh(container: docker.models.containers.Container, command: str) -> tuple[int, str]:
    code, output = container.exec_run(["/bin/sh", "-c", command])
    return code, output.decode(errors="replace")


def wait_running(engine: DockerEngine, app: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = [c for c in containers(engine, app).values() if c.status == "running"]
        if len(running) == count:
            return
        time.sleep(0.2)
    found = {
        name: (c.status, c.attrs.get("State", {}).get("Error"), c.logs(tail=5)[-300:])
        for name, c in containers(engine, app).items()
    }
    pytest.fail(f"{app}: not all {count} containers running: {found}")


def test_two_service_release_runs_confined(
    engine: DockerEngine, apps: list[str], busybox: str, engine_name: str
) -> None:
    app = app_name(apps, "shop")
    steps = reconcile(engine, desired(manifest(app, busybox, port=18081)))
    assert steps
    wait_running(engine, app, 2)
    web = containers(engine, app)["web"]
    host = web.attrs["HostConfig"]

    assert host["ReadonlyRootfs"] is True
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (48 * 1024**2, 500_000_000, 64)
    assert host["Init"] is True
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert set(host["Tmpfs"]) >= {"/tmp", "/run"}
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18081"}]}
    # Podman names ulimits RLIMIT_NOFILE, Docker nofile: the same limits either way (and in force, below).
    assert {u["Name"].removeprefix("RLIMIT_").lower(): u["Soft"] for u in host["Ulimits"]} == {
        "nofile": 4096,
        "nproc": 4096,
    }
    assert host["PidMode"] in ("", "private")
    assert host["IpcMode"] in ("", "private", "shareable")
    assert not host.get("Devices")
    if engine_name == "podman":
        # Podman's compatible API does not echo log options back; its own inspect shows the cap.
        native = subprocess.run(
            [PODMAN, "inspect", web.id, "--format", "{{.HostConfig.LogConfig.Size}}"], capture_output=True, text=True
        )
        assert native.stdout.strip() == "10MB"
    else:
        assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
    assert all(m["Type"] in ("volume", "tmpfs") for m in web.attrs["Mounts"])
    # Inside: no capabilities at all, a read-only root, the limits in force.
    assert sh(web, "grep CapEff /proc/self/status")[1].split()[-1] == "0000000000000000"
    assert sh(web, "touch /etc/x")[0] != 0
    assert sh(web, "touch /tmp/x")[0] == 0
    assert sh(web, "ulimit -n")[1].strip() == "4096"
    assert "MODE=one" in sh(web, "env")[1]
    assert "FLEET=" not in sh(web, "env")[1]  # the manifest does not declare it: operators cannot inject it
    # Services of one app reach each other by name, over the app's own network.
    assert sh(web, "nc -w 3 db 8080")[1].strip() == "db"


def test_changing_one_service_recreates_only_it_and_volumes_survive(
    engine: DockerEngine, apps: list[str], busybox: str
) -> None:
    app = app_name(apps, "shop")
    reconcile(engine, desired(manifest(app, busybox)))
    wait_running(engine, app, 2)
    before = {name: c.id for name, c in containers(engine, app).items()}
    assert sh(containers(engine, app)["db"], "echo kept > /data/state")[0] == 0

    steps = reconcile(engine, desired(manifest(app, busybox, version="1.1.0", web_env="MODE: two")))

    assert {type(s).__name__ for s in steps} == {
        "StopContainer",
        "RemoveContainer",
        "CreateContainer",
        "StartContainer",
    }
    wait_running(engine, app, 2)
    after = {name: c.id for name, c in containers(engine, app).items()}
    assert after["db"] == before["db"]
    assert after["web"] != before["web"]
    assert reconcile(engine, desired(manifest(app, busybox, version="1.1.0", web_env="MODE: two"))) == ()

    # A release that changes db as well: the volume, and what it holds, carry over.
    reconcile(engine, desired(manifest(app, busybox, version="2.0.0", web_env="MODE: two", db_env="V: '2'")))
    wait_running(engine, app, 2)
    db = containers(engine, app)["db"]
    assert db.id != before["db"]
    assert sh(db, "cat /data/state")[1].strip() == "kept"


def test_apps_cannot_reach_each_other_and_updates_stay_inside_one_app(
    engine: DockerEngine, apps: list[str], busybox: str
) -> None:
    one, two = app_name(apps, "vendor"), app_name(apps, "customer")
    # Neither app has the `network` permission: each has only its internal network.
    reconcile(engine, desired(manifest(one, busybox), manifest(two, busybox)))
    wait_running(engine, one, 2)
    wait_running(engine, two, 2)
    theirs = containers(engine, two)
    their_ips = [
        network["IPAddress"]
        for container in theirs.values()
        for network in container.attrs["NetworkSettings"]["Networks"].values()
    ]
    assert len(their_ips) == 2
    mine = containers(engine, one)["web"]
    for ip in their_ips:
        assert "db" not in sh(mine, f"nc -w 2 {ip} 8080")[1]
        assert "web" not in sh(mine, f"nc -w 2 {ip} 8080")[1]
    assert sh(mine, "nc -w 2 db 8080")[1].strip() == "db"  # its own db, by name

    ids = {c.id for c in theirs.values()}
    reconcile(engine, desired(manifest(one, busybox, version="1.1.0", web_env="MODE: new"), manifest(two, busybox)))
    assert {c.id for c in containers(engine, two).values()} == ids


def test_restarted_agent_finds_its_containers_and_never_touches_others(
    engine: DockerEngine, apps: list[str], busybox: str, engine_socket: str
) -> None:
    app = app_name(apps, "shop")
    reconcile(engine, desired(manifest(app, busybox)))
    wait_running(engine, app, 2)
    foreign = docker_client(engine).containers.run(
        busybox, ["/bin/sleep", "300"], detach=True, labels={"owner": "someone"}
    )
    try:
        fresh = DockerEngine(engine_socket, owner=engine.owner)  # a restarted agent: nothing in memory
        assert reconcile(fresh, desired(manifest(app, busybox))) == ()
        reconcile(fresh, desired())  # nothing assigned any more: the app goes, the stranger stays
        assert containers(fresh, app) == {}
        foreign.reload()
        assert foreign.status == "running"
        assert docker_client(fresh).volumes.get(f"edgefleet_{app}_data")  # data is kept
        fresh.close()
    finally:
        foreign.remove(force=True)


def test_denied_permission_changes_nothing(engine: DockerEngine, apps: list[str], busybox: str) -> None:
    app = app_name(apps, "shop")
    reconcile(engine, desired(manifest(app, busybox)))
    before = {c.id for c in containers(engine, app).values()}
    greedy = manifest(app, busybox, version="2.0.0", permissions='["host-read:/srv"]')
    with pytest.raises(PermissionRefusedError) as refused:
        reconcile(engine, desired(greedy, policy=parse_policy('allow = ["network"]')))
    assert [(r.service, r.permission) for r in refused.value.refused] == [("web", "host-read:/srv")]
    assert {c.id for c in containers(engine, app).values()} == before


def test_images_are_pulled_by_digest_or_loaded_from_a_verified_bundle(
    engine: DockerEngine, apps: list[str], test_registry: Registry, tmp_path: Path
) -> None:
    pulled = push_busybox(test_registry, f"pull-{time.time_ns()}")
    bundled = push_busybox(test_registry, f"bundle-{time.time_ns()}")
    # The archive `release build --bundle` writes (Docker Engine 20.10 loads it since it carries manifest.json).
    engine.bundles[bundled] = export(test_registry, bundled, tmp_path / "image.tar")
    ids = {image: configs(test_registry, image)["amd64"] for image in (pulled, bundled)}
    try:
        for image in (pulled, bundled):
            app = app_name(apps, "img")
            reconcile(engine, desired(manifest(app, image)))
            wait_running(engine, app, 2)
            # Found by its digest on every engine: Docker knows a loaded image by its config's digest only.
            assert engine.observe(frozenset({image})).images == {image}
            assert {c.image.id for c in containers(engine, app).values()} == {ids[image]}
            assert {service["image"] for service in engine.status()[app].values()} == {image}
            # Unassigned, the containers go; then the agent's references to the image go, and with them the image.
            reconcile(engine, desired())
            assert engine.remove_image(image) is True
            assert engine.observe(frozenset({image})).images == frozenset()
            assert ids[image] not in image_ids(docker_client(engine))
    finally:
        forget(docker_client(engine), *ids.values())


def test_a_network_the_agent_did_not_make_is_never_adopted(engine: DockerEngine, apps: list[str], busybox: str) -> None:
    app = app_name(apps, "squat")
    squatter = docker_client(engine).networks.create(f"edgefleet_{app}", internal=False, labels={"owner": "someone"})
    try:
        with pytest.raises(EngineError, match="not this agent's"):
            reconcile(engine, desired(manifest(app, busybox)))
        assert containers(engine, app) == {}
    finally:
        squatter.remove()


def slipped_through(release: Release, *permissions: str) -> Release:
    """`release` as if its manifest had passed a parser that let these host paths through (a signed
    manifest, a release installed before this agent's upgrade): built without `parse_permission`."""
    service = release.services[-1]
    granted = tuple(Permission(*text.split(":", 1)) for text in permissions)
    changed = replace(service, policy=service.policy.model_copy(update={"permissions": granted}))
    return replace(release, services=(*release.services[:-1], changed))


ALLOW_HOST_PATHS = parse_policy('allow = ["network", "host-read:*", "host-write:*"]')


@pytest.mark.parametrize("permission", ["host-read://etc", "host-write://", "host-write:/var/lib/containers/"])
def test_the_agent_refuses_a_denied_host_path_a_signed_manifest_names(
    engine: DockerEngine, apps: list[str], busybox: str, permission: str
) -> None:
    # The outside review's attack: the policy allows host-read:*, and the release names a spelling of
    # a denied path. The agent refuses it when it plans, whatever the manifest's signature...
    app = app_name(apps, "escape")
    evil = slipped_through(manifest(app, busybox), permission)
    with pytest.raises(PermissionRefusedError, match="cannot be shared"):
        reconcile(engine, desired(evil, policy=ALLOW_HOST_PATHS))
    # ...and the engine adapter again right before the container would be made with the mount.
    spec = release_specs(evil, facts=HostFacts())[-1]
    with pytest.raises(EngineError, match="host path refused") as refused:
        engine.execute(CreateContainer(spec.target()), {(app, spec.service): spec})
    assert not refused.value.retryable
    assert containers(engine, app) == {}


def test_host_paths_are_checked_where_they_lead_and_against_the_agents_own(
    engine: DockerEngine, apps: list[str], busybox: str, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the host\n")
    (tmp_path / "config").symlink_to("/etc")
    agent_state = tmp_path / "agent"
    agent_state.mkdir()
    own = DockerEngine(engine.base_url, owner=engine.owner, protected=protected_paths([agent_state]))
    root = docker_client(engine).info()["DockerRootDir"]
    socket = engine.base_url.removeprefix("unix://")
    try:
        for path, why in [
            (tmp_path / "config", "leads to /etc"),
            (agent_state / "tuf", "edgefleet's state"),
            (Path(root) / "volumes", "edgefleet's state"),
            (Path(socket).parent, "edgefleet's state"),
        ]:
            app = app_name(apps, "paths")
            release = slipped_through(manifest(app, busybox), f"host-read:{path}")
            spec = release_specs(release, facts=HostFacts())[-1]
            with pytest.raises(EngineError, match=why):
                own.execute(CreateContainer(spec.target()), {(app, spec.service): spec})
            assert containers(engine, app) == {}
        # A path the device may share is mounted read-only where the release asked.
        app = app_name(apps, "paths")
        fine = manifest(app, busybox, permissions=f'["host-read:/{shared}/./"]')
        reconcile(own, desired(fine, policy=ALLOW_HOST_PATHS))
        wait_running(own, app, 2)
        web = containers(own, app)["web"]
        assert sh(web, f"cat {shared}/hello") == (0, "from the host\n")
        assert sh(web, f"touch {shared}/new")[0] != 0
    finally:
        own.close()


def test_the_agent_knows_its_engine(engine: DockerEngine, engine_name: str) -> None:
    found = engine.identify()
    assert found.kind == engine_name
    assert api_level(found.api_version) >= api_level(API_VERSION)
    assert found.version.startswith("4." if engine_name == "podman" else "20.10")
    assert found.root_dir
    assert found.as_report() == {"kind": engine_name, "version": found.version, "api_version": found.api_version}

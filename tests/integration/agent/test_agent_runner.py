"""The agent's cycle end to end on one machine: an in-process hub, the agent library, real Podman.

Publish -> assign -> the agent polls, verifies, reconciles and reports; a new release
recreates only what changed; the hub going away leaves the containers running; a
restarted agent changes nothing; a denied permission changes nothing and the hub hears why.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import pytest

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.engine.docker import DockerEngine
from edgefleet.agent.errors import EngineError, HubUnreachableError
from edgefleet.agent.plan import RemoveContainer
from edgefleet.agent.policy import parse_policy
from edgefleet.agent.runner import Agent, load_state, run, trust_store
from tests.conftest import Fleet
from tests.integration.agent.conftest import app_name, docker_client, push_busybox
from tests.integration.agent.images import configs, export, forget, old_format, push_multi_arch
from tests.integration.agent.test_engine import containers, wait_running
from tests.integration.registry.conftest import Registry
from tests.publishing import Publisher, assign
from tests.update_matrix import Recorded

pytestmark = [pytest.mark.xdist_group("podman"), pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

POLICY = parse_policy('allow = ["network"]')


def app_text(
    app: str,
    version: str,
    image: str,
    *,
    web_env: str = "one",
    extra_permission: str = "",
    web: str = "while true; do echo web | nc -l -p 8080; done",
    strategy: str = "download-then-kill",
) -> str:
    permissions = f'["{extra_permission}"]' if extra_permission else "[]"
    return f"""
services:
  db:
    image: {image}
    command: ["/bin/sh", "-c", "while true; do echo db | nc -l -p 8080; done"]
    volumes: ["data:/data"]
  web:
    image: {image}
    command: ["/bin/sh", "-c", "{web}"]
    environment: {{MODE: {web_env}, SITE: unset}}
    depends_on: [db]
volumes: {{data: }}
x-edgefleet:
  app: {app}
  version: {version}
  architectures: [amd64, arm64]
  update: {{health_window: 2s, strategy: {strategy}}}
  services:
    db: {{resources: {{memory: 32m, cpus: 0.25, pids: 32}}}}
    web:
      resources: {{memory: 32m, cpus: 0.25, pids: 32}}
      permissions: {permissions}
"""


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    return Publisher.create(fleet, tmp_path)


@pytest.fixture
def agent(fleet: Fleet, tmp_path: Path, engine_socket: str, publisher: Publisher) -> Any:
    identity = fleet.enroll()  # an arm64 device, as the fleet helper enrolls them
    data_dir = tmp_path / "agent"
    data_dir.mkdir()
    client = fleet.device_client()
    repository_root, director_root = client.tuf_roots(identity)
    trust_store(data_dir).bootstrap(repository_root=repository_root, director_root=director_root)
    engine = DockerEngine(engine_socket, owner=identity.device_id)
    made = Agent(
        client=client, identity=identity, engine=engine, data_dir=data_dir, policy=POLICY, arch="arm64", poll_wait=0
    )
    yield made
    engine.close()


def replace_agent(agent: Agent) -> Agent:
    """The same device's agent after a restart: nothing kept in memory."""
    return Agent(
        client=agent.client,
        identity=agent.identity,
        engine=agent.engine,
        data_dir=agent.data_dir,
        policy=agent.policy,
        arch=agent.arch,
        poll_wait=agent.poll_wait,
    )


def twin(fleet: Fleet, device_id: str) -> dict[str, Any]:
    reported: dict[str, Any] = fleet.call("GET", f"/devices/{device_id}/twin").json()["reported"]
    return reported


def test_agent_follows_its_assignment(
    fleet: Fleet, publisher: Publisher, agent: Agent, apps: list[str], busybox: str, engine_name: str
) -> None:
    app = app_name(apps, "plant")
    publisher.publish(app, "1.0.0", text=app_text(app, "1.0.0", busybox))
    device = agent.identity.device_id
    # Nothing assigned yet: a cycle changes nothing.
    assert agent.cycle() is True
    assert containers(agent.engine, app) == {}

    assert assign(fleet, device, f"{app}@1.0.0").status_code == 200
    assert agent.cycle() is True
    wait_running(agent.engine, app, 2)
    first = {name: c.id for name, c in containers(agent.engine, app).items()}
    reported = twin(fleet, device)
    assert reported["apps"][app]["version"] == "1.0.0"
    assert set(reported["apps"][app]["services"]) == {"db", "web"}
    assert reported.get("last_error") is None  # null removes it from the twin
    assert reported["engine"]["kind"] == engine_name  # the engine the agent found, and its versions
    assert reported["engine"]["api_version"] == "1.41"
    assert agent.cycle() is False  # unchanged: a 304, and nothing to do

    # A new release changing only web's environment.
    publisher.publish(app, "1.1.0", text=app_text(app, "1.1.0", busybox, web_env="two"))
    assert assign(fleet, device, f"{app}@1.1.0").status_code == 200
    assert agent.cycle() is True
    wait_running(agent.engine, app, 2)
    second = {name: c.id for name, c in containers(agent.engine, app).items()}
    assert second["db"] == first["db"]
    assert second["web"] != first["web"]

    # Operator-set environment reaches the containers, signed inside the director's assignment.
    changed = fleet.call("PATCH", f"/devices/{device}/environment", json={"set": {"SITE": "plant-7"}})
    assert changed.status_code == 200, changed.text
    assert agent.cycle() is True
    wait_running(agent.engine, app, 2)
    second = {name: c.id for name, c in containers(agent.engine, app).items()}
    running = containers(agent.engine, app)
    assert "SITE=plant-7" in running["web"].attrs["Config"]["Env"]
    assert not any(e.startswith("SITE=") for e in running["db"].attrs["Config"]["Env"])  # db does not declare it

    # The hub goes away: the agent backs off, the containers keep running.
    reachable = agent.client
    agent.client = DeviceClient.connect("http://127.0.0.1:9", ca=None, timeout=1)
    with pytest.raises(HubUnreachableError):
        agent.cycle()
    rounds = iter(range(3))
    delays: list[float] = []
    run(agent, initial=0.01, ceiling=0.05, sleep=delays.append, stop=lambda: next(rounds, None) is None)
    assert len(delays) == 3
    assert all(0 <= d <= 0.05 for d in delays)
    assert {name: c.id for name, c in containers(agent.engine, app).items()} == second
    agent.client = reachable

    # A restarted agent (same data dir, nothing in memory) changes nothing.
    restarted = Agent(
        client=reachable,
        identity=agent.identity,
        engine=DockerEngine(agent.engine.base_url, owner=agent.identity.device_id),
        data_dir=agent.data_dir,
        policy=POLICY,
        arch="arm64",
        poll_wait=0,
    )
    assert restarted.apply() == 0
    assert restarted.etag == load_state(agent.data_dir).etag is not None  # the target it fully processed
    assert restarted.cycle() is False  # polled with that ETag: a 304, nothing verified
    assert {name: c.id for name, c in containers(agent.engine, app).items()} == second

    # A release asking for a permission this device's policy does not grant: nothing changes.
    publisher.publish(
        app, "2.0.0", text=app_text(app, "2.0.0", busybox, web_env="three", extra_permission="host-read:/srv")
    )
    assert assign(fleet, device, f"{app}@2.0.0").status_code == 200
    restarted.cycle()
    assert {name: c.id for name, c in containers(agent.engine, app).items()} == second
    error = twin(fleet, device)["last_error"]
    assert "host-read:/srv" in error
    assert "web" in error


def first_release(fleet: Fleet, publisher: Publisher, agent: Agent, app: str, busybox: str) -> dict[str, str]:
    """APP 1.0.0 published, assigned and running on the agent's device; returns service -> container id."""
    publisher.publish(app, "1.0.0", text=app_text(app, "1.0.0", busybox))
    assert assign(fleet, agent.identity.device_id, f"{app}@1.0.0").status_code == 200
    agent.cycle()
    wait_running(agent.engine, app, 2)
    return {name: c.id for name, c in containers(agent.engine, app).items()}


def test_a_failing_release_rolls_back_is_reported_and_not_retried(
    fleet: Fleet, publisher: Publisher, agent: Agent, apps: list[str], busybox: str
) -> None:
    app = app_name(apps, "plant")
    device = agent.identity.device_id
    before = first_release(fleet, publisher, agent, app, busybox)

    publisher.publish(app, "1.1.0", text=app_text(app, "1.1.0", busybox, web="exit 4"))
    assert assign(fleet, device, f"{app}@1.1.0").status_code == 200
    agent.cycle()

    assert {name: c.id for name, c in containers(agent.engine, app).items()} == before
    reported = twin(fleet, device)
    assert reported["apps"][app]["version"] == "1.0.0"
    assert "failed and was rolled back" in reported["last_error"]
    assert re.search("exited with code 4|restarted [0-9]+ times", reported["last_error"])
    assert agent.journal.last(app).phase == "rolled-back"
    attempts = agent.journal.last(app).id

    # The hub shows the outcome (which service, why, its last log lines) and audits it as the device's.
    agent.cycle()  # events are delivered at the start of each cycle
    shown = fleet.call("GET", f"/devices/{device}/state").json()["updates"][app]
    assert (shown["status"], shown["service"], shown["from_release"], shown["to_release"]) == (
        "failed",
        "web",
        "1.0.0",
        "1.1.0",
    )
    assert re.search("exited with code 4|restarted [0-9]+ times", shown["reason"])
    assert shown["logs"] is not None
    assert failures(fleet, device) == [f"{app} 1.0.0 -> 1.1.0"]

    agent.etag = None  # the next poll answers in full again: still no second attempt
    agent.cycle()
    assert agent.journal.last(app).id == attempts
    assert "failed on this device; staying on 1.0.0" in twin(fleet, device)["last_error"]
    assert {name: c.id for name, c in containers(agent.engine, app).items()} == before
    assert failures(fleet, device) == [f"{app} 1.0.0 -> 1.1.0"]

    # An operator asks for a retry: the device tries once more (and fails once more), then stops again.
    retried = fleet.call("POST", f"/devices/{device}/retry", json={"app": app})
    assert retried.status_code == 200, retried.text
    agent.cycle()
    assert agent.journal.last(app).id != attempts
    assert agent.journal.last(app).phase == "rolled-back"
    agent.cycle()
    agent.etag = None
    agent.cycle()
    assert failures(fleet, device) == [f"{app} 1.0.0 -> 1.1.0"] * 2
    assert {name: c.id for name, c in containers(agent.engine, app).items()} == before

    # The operator settles on what runs, then assigns the failed release anew: a fresh decision, a fresh try.
    assert assign(fleet, device, f"{app}@1.0.0", rollback=True).status_code == 200
    agent.cycle()
    tried = agent.journal.last(app).id
    assert assign(fleet, device, f"{app}@1.1.0").status_code == 200
    agent.cycle()
    assert agent.journal.last(app).id != tried
    assert {name: c.id for name, c in containers(agent.engine, app).items()} == before


class RefusingRemovals(Recorded):
    """The agent's engine, refusing the next `refusals` container removals (as an engine in trouble does)."""

    def __init__(self, engine: DockerEngine, refusals: int) -> None:
        super().__init__(engine)
        self.refusals = refusals

    def execute(self, step: Any, specs: Any) -> None:
        if isinstance(step, RemoveContainer) and self.refusals > 0:
            self.refusals -= 1
            raise EngineError(f"remove {step.app}/{step.service}: the engine refuses for now")
        super().execute(step, specs)


def test_a_failed_release_whose_rollback_the_engine_cut_short_is_not_started_again(
    fleet: Fleet, publisher: Publisher, agent: Agent, apps: list[str], busybox: str
) -> None:
    app = app_name(apps, "stuck")
    device = agent.identity.device_id
    before = first_release(fleet, publisher, agent, app, busybox)
    real = agent.engine

    publisher.publish(app, "1.1.0", text=app_text(app, "1.1.0", busybox, web="exit 4"))
    assert assign(fleet, device, f"{app}@1.1.0").status_code == 200
    agent.engine = cast(Any, RefusingRemovals(real, refusals=2))  # the rollback, and its second try, cut short
    agent.cycle()
    (stuck,) = agent.journal.unfinished()
    assert (stuck.phase, stuck.detail["outcome"]) == ("rolling-back", "failed")  # judged failed, not rolled back
    assert agent.retry
    agent.engine, agent.retry_at = real, 0.0  # the engine answers again; the retry is due
    agent.cycle()

    assert [t.to_release for t in agent.journal.unsettled()] == []
    assert agent.journal.last(app).detail["outcome"] == "failed"
    wait_running(agent.engine, app, 2)
    assert {name: c.id for name, c in containers(agent.engine, app).items()} == before
    tries = agent.journal._db.execute("SELECT COUNT(*) FROM transactions WHERE to_release = '1.1.0'").fetchone()[0]
    assert tries == 1  # finished and settled as failed, never started a second time
    agent.cycle()  # the events go out at the start of a cycle
    assert failures(fleet, device) == [f"{app} 1.0.0 -> 1.1.0"]


def failures(fleet: Fleet, device: str) -> list[str]:
    """The failed updates the hub's audit log holds for `device`, each with the device as actor."""
    entries = fleet.call("GET", "/audit").json()
    failed = [e for e in entries if e["action"] == "device.update.failed"]
    assert all(e["actor"] == f"device:{device}" for e in failed)
    return [f"{e['detail']['app']} {e['detail']['from_release']} -> {e['detail']['to_release']}" for e in failed]


def test_an_unreadable_installed_release_leaves_the_engine_alone(
    fleet: Fleet, publisher: Publisher, agent: Agent, apps: list[str], busybox: str
) -> None:
    app = app_name(apps, "plant")
    publisher.publish(app, "1.0.0", text=app_text(app, "1.0.0", busybox))
    assert assign(fleet, agent.identity.device_id, f"{app}@1.0.0").status_code == 200
    agent.cycle()
    wait_running(agent.engine, app, 2)
    before = {name: c.id for name, c in containers(agent.engine, app).items()}
    installed = Path(agent.state.apps[app].directory)
    assert (installed / "compose.json").is_file()  # what the agent reads at rest (agent.manifests)
    for name in ("compose.json", "compose.yaml"):
        (installed / name).write_text("torn by a power loss")
    agent = replace_agent(agent)  # the device comes back up after the power loss

    agent.cycle()

    assert {name: c.id for name, c in containers(agent.engine, app).items()} == before
    assert "unreadable" in twin(fleet, agent.identity.device_id)["last_error"]


def test_after_a_commit_only_the_running_and_the_previous_release_are_kept(
    fleet: Fleet, publisher: Publisher, agent: Agent, apps: list[str], test_registry: Registry
) -> None:
    app = app_name(apps, "prune")
    device = agent.identity.device_id
    images = {version: push_busybox(test_registry, f"{app}-{version}") for version in ("1.0.0", "1.1.0", "1.2.0")}

    def present() -> set[str]:
        return {version for version, image in images.items() if docker_client(agent.engine).images.list(name=image)}

    for version in images:
        publisher.publish(app, version, text=app_text(app, version, images[version]))
        assert assign(fleet, device, f"{app}@{version}").status_code == 200
        agent.cycle()
        wait_running(agent.engine, app, 2)
        assert agent.journal.last(app).phase == "committed"
    # 1.0.0 is older than the previous release: its image and its files are gone. 1.1.0 stays, so a
    # rollback needs no network.
    assert present() == {"1.1.0", "1.2.0"}
    kept = sorted(d.name for d in (agent.data_dir / "releases" / app).iterdir())
    assert len(kept) == 2
    assert all("1.1.0" in name or "1.2.0" in name for name in kept), kept

    # Going back to the previous release: both images stay (each is the other's previous now).
    assert assign(fleet, device, f"{app}@1.1.0", rollback=True).status_code == 200
    agent.cycle()
    wait_running(agent.engine, app, 2)
    assert {c.labels["io.edgefleet.release"] for c in containers(agent.engine, app).values()} == {"1.1.0"}
    assert present() == {"1.1.0", "1.2.0"}


def test_the_release_floor_outlives_unassignment_and_restarts(
    fleet: Fleet, publisher: Publisher, agent: Agent, apps: list[str], busybox: str
) -> None:
    app = app_name(apps, "plant")
    device = agent.identity.device_id
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        publisher.publish(app, version, text=app_text(app, version, busybox))
    assert assign(fleet, device, f"{app}@3.0.0").status_code == 200
    agent.cycle()
    wait_running(agent.engine, app, 2)
    assert agent.state.apps[app].release_counter == 3

    # The app leaves the director's targets: the device stops it and drops its installed record...
    with fleet.hub.store.transaction() as tx:
        tx.delete_assignment(device, app)
    agent.cycle()
    assert app not in agent.state.apps
    assert containers(agent.engine, app) == {}

    # ...and the outside review's attack: the older release assigned anew, without the rollback mark.
    assert assign(fleet, device, f"{app}@1.0.0").json()["rollback"] is False
    for current in (agent, replace_agent(agent)):  # the floor is on disk: a restarted agent keeps it
        current.cycle()
        assert app not in current.state.apps
        assert containers(current.engine, app) == {}
        assert "release_rollback" in (current.last_error or "")
        assert "(counter 1) is older than the last release installed here (counter 3)" in (current.last_error or "")
    assert "release_rollback" in twin(fleet, device)["last_error"]

    # With the director's signed mark, asked for explicitly, the operator's rollback installs.
    marked = assign(fleet, device, f"{app}@1.0.0", rollback=True)
    assert (marked.status_code, marked.json()["rollback"]) == (200, True)
    restarted = replace_agent(agent)
    restarted.cycle()
    wait_running(restarted.engine, app, 2)
    assert restarted.state.apps[app].version == "1.0.0"
    # A signed rollback lowers the floor to what runs now: 2.0.0 is an ordinary update from there.
    assert assign(fleet, device, f"{app}@2.0.0").json()["rollback"] is False
    restarted.cycle()
    wait_running(restarted.engine, app, 2)
    assert restarted.state.apps[app].version == "2.0.0"


def test_bundled_releases_install_and_a_registry_release_of_a_bundled_image_runs(
    fleet: Fleet, publisher: Publisher, agent: Agent, apps: list[str], test_registry: Registry, engine_socket: str
) -> None:
    first, second = app_name(apps, "bundled"), app_name(apps, "pulled")
    device = agent.identity.device_id
    held = push_busybox(test_registry, f"{first}-held")
    multi = push_multi_arch(test_registry, f"{first}-multi")
    ids = {image: configs(test_registry, image)["amd64"] for image in (held, multi)}

    def old_bundle(image: str, destination: Path) -> None:
        """As `release build --bundle` wrote archives before they carried Docker's manifest.json."""
        old_format(export(test_registry, image, destination.with_suffix(".new")), destination)
        destination.with_suffix(".new").unlink()

    def new_bundle(image: str, destination: Path) -> None:
        export(test_registry, image, destination)

    def running_images(app: str) -> set[str]:
        return {c.image.id for c in containers(agent.engine, app).values()}

    try:
        # A release bundled by an earlier publisher: the device loads it, on Docker Engine as on Podman.
        publisher.publish(first, "1.0.0", text=app_text(first, "1.0.0", held), exporter=old_bundle)
        assert assign(fleet, device, f"{first}@1.0.0").status_code == 200
        agent.cycle()
        wait_running(agent.engine, first, 2)
        assert agent.journal.last(first).phase == "committed"
        assert running_images(first) == {ids[held]}

        # Another app's registry release of the same image: the device holds that image through the
        # first app's bundle (Docker knows it by its config digest only, and used to load the bundle
        # again here and fail), so nothing is pulled or reloaded.
        publisher.publish(second, "1.0.0", text=app_text(second, "1.0.0", held))
        assert assign(fleet, device, f"{second}@1.0.0").status_code == 200
        agent.cycle()
        wait_running(agent.engine, second, 2)
        assert agent.journal.last(second).phase == "committed"
        assert running_images(second) == {ids[held]}

        # A multi-architecture bundle as `release build --bundle` writes it now: the engine's platform runs.
        publisher.publish(first, "1.1.0", text=app_text(first, "1.1.0", multi), exporter=new_bundle)
        assert assign(fleet, device, f"{first}@1.1.0").status_code == 200
        agent.cycle()
        wait_running(agent.engine, first, 2)
        assert agent.journal.last(first).phase == "committed"
        assert running_images(first) == {ids[multi]}
        reported = twin(fleet, device)["apps"]
        assert {s["image"] for s in reported[first]["services"].values()} == {multi}
        assert reported.get("last_error") is None

        # A restarted agent (a new engine client, nothing in memory) finds every image by its release's
        # digest: the second app's through the bundle of the first app's previous release, kept with its image.
        restarted = Agent(
            client=agent.client,
            identity=agent.identity,
            engine=DockerEngine(engine_socket, owner=device),
            data_dir=agent.data_dir,
            policy=POLICY,
            arch="arm64",
            poll_wait=0,
        )
        assert restarted.apply() == 0
        assert {s["image"] for s in restarted.engine.status()[second].values()} == {held}
    finally:
        for app in (first, second):  # what the apps fixture would remove, first: the images go with them
            for container in containers(agent.engine, app).values():
                container.remove(force=True)
        forget(docker_client(agent.engine), *ids.values())


class Downloads:
    """The release files an agent downloaded in full, by kind (an `agent.progress.DownloadProgress`)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def update(self, url: str, received: int, total: int | None) -> None:
        pass

    def end(self, url: str, *, complete: bool) -> None:
        if complete:
            self.names.append("manifest" if url.endswith("compose.yaml") else "archive")


def test_an_unchanged_bundled_image_is_taken_from_the_device_not_downloaded_again(
    fleet: Fleet, publisher: Publisher, agent: Agent, apps: list[str], test_registry: Registry
) -> None:
    app = app_name(apps, "reuse")
    device = agent.identity.device_id
    held = push_busybox(test_registry, f"{app}-held")
    config = configs(test_registry, held)["amd64"]
    downloads = Downloads()
    agent.progress = downloads

    def bundle(image: str, destination: Path) -> None:
        export(test_registry, image, destination)

    def update_to(version: str) -> list[Path]:
        publisher.publish(app, version, text=app_text(app, version, held, web_env=version), exporter=bundle)
        assert assign(fleet, device, f"{app}@{version}").status_code == 200
        downloads.names.clear()
        agent.cycle()
        wait_running(agent.engine, app, 2)
        assert agent.state.apps[app].version == version, agent.last_error
        return sorted((Path(agent.state.apps[app].directory) / "images").iterdir())

    try:
        (first,) = update_to("1.0.0")
        first_bytes = first.read_bytes()
        assert sorted(downloads.names) == ["archive", "manifest"]
        # The next release bundles the same image: the archive the device holds has its signed
        # length and hashes, so it is taken from there; only the manifest comes from the hub.
        (second,) = update_to("1.1.0")
        assert downloads.names == ["manifest"]
        assert second.read_bytes() == first_bytes
        # A held archive that no longer matches its signed hashes is never used: downloaded instead.
        with second.open("r+b") as damaged:
            damaged.seek(-1, 2)
            last = damaged.read(1)
            damaged.seek(-1, 2)
            damaged.write(bytes([last[0] ^ 1]))
        first.unlink()  # the previous release's copy (the same file, or another) is gone too
        (third,) = update_to("1.2.0")
        assert sorted(downloads.names) == ["archive", "manifest"]
        assert third.read_bytes() == first_bytes
    finally:
        for container in containers(agent.engine, app).values():
            container.remove(force=True)
        forget(docker_client(agent.engine), config)

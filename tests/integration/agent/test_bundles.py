"""Bundled images on every engine (Podman, Docker Engine 20.10): the archives `release build --bundle` writes load
as they are, and the agent loads the image a release names, checked by digest, from new and old archives alike."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import pytest

from edgefleet.agent.engine.docker import DockerEngine
from edgefleet.agent.errors import EngineError
from edgefleet.agent.reconcile import reconcile
from tests.integration.agent.conftest import app_name, docker_client, push_busybox
from tests.integration.agent.images import (
    configs,
    document,
    export,
    forget,
    image_ids,
    members,
    old_format,
    push_multi_arch,
)
from tests.integration.agent.test_engine import containers, desired, manifest, wait_running
from tests.integration.registry.conftest import Registry


def is_docker(engine: DockerEngine) -> bool:
    return "podman" not in json.dumps(docker_client(engine).version().get("Components", [])).lower()


def test_the_archive_release_build_writes_loads_as_it_is(
    engine: DockerEngine, test_registry: Registry, tmp_path: Path
) -> None:
    # What an operator does by hand with a bundle: `docker load -i` / `podman load -i`.
    single = push_busybox(test_registry, f"by-hand-{time.time_ns()}")
    multi = push_multi_arch(test_registry, f"by-hand-multi-{time.time_ns()}")
    ids = {image: configs(test_registry, image) for image in (single, multi)}
    try:
        for image in (single, multi):
            with export(test_registry, image, tmp_path / "image.tar").open("rb") as archive:
                docker_client(engine).images.load(archive)
            present = image_ids(docker_client(engine))
            loaded = {arch for arch, config in ids[image].items() if config in present}
            name = image.partition("@")[0]
            if is_docker(engine):
                # Docker reads manifest.json: every Linux image, each tagged by its own manifest's digest.
                assert loaded == set(ids[image])
                tagged = docker_client(engine).images.get(ids[image]["amd64"]).tags
                assert all(tag.startswith(f"{name}:sha256-") for tag in tagged)
                assert tagged
            else:
                # Podman reads the OCI layout: its own platform, found by the digest the release names.
                assert loaded == {"amd64"}
                assert docker_client(engine).images.get(image).id == ids[image]["amd64"]
    finally:
        forget(docker_client(engine), *(config for found in ids.values() for config in found.values()))


def test_a_multi_architecture_bundle_loads_the_engines_platform_only(
    engine: DockerEngine, apps: list[str], test_registry: Registry, tmp_path: Path
) -> None:
    image = push_multi_arch(test_registry, f"multi-{time.time_ns()}")
    ids = configs(test_registry, image)
    engine.bundles[image] = export(test_registry, image, tmp_path / "image.tar")
    try:
        app = app_name(apps, "multi")
        reconcile(engine, desired(manifest(app, image)))
        wait_running(engine, app, 2)
        assert engine.observe(frozenset({image})).images == {image}
        assert {c.image.id for c in containers(engine, app).values()} == {ids["amd64"]}
        assert ids["arm64"] not in image_ids(docker_client(engine))  # the other platform never reached the engine
    finally:
        forget(docker_client(engine), *ids.values())


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_an_old_format_bundle_still_loads(
    engine: DockerEngine, apps: list[str], test_registry: Registry, tmp_path: Path, kind: str
) -> None:
    # A device keeps the bundles of releases published before manifest.json was written: an OCI layout alone.
    marker = f"old-{kind}-{time.time_ns()}"
    image = push_busybox(test_registry, marker) if kind == "single" else push_multi_arch(test_registry, marker)
    archive = old_format(export(test_registry, image, tmp_path / "new.tar"), tmp_path / "old.tar")
    assert not members(archive) & {"manifest.json", "repositories"}
    engine.bundles[image] = archive
    ids = configs(test_registry, image)
    try:
        app = app_name(apps, "old")
        reconcile(engine, desired(manifest(app, image)))
        wait_running(engine, app, 2)
        assert engine.observe(frozenset({image})).images == {image}
        assert {c.image.id for c in containers(engine, app).values()} == {ids["amd64"]}
    finally:
        forget(docker_client(engine), *ids.values())


def test_a_bundle_holding_another_image_is_refused_and_nothing_is_loaded(
    engine: DockerEngine, apps: list[str], test_registry: Registry, tmp_path: Path
) -> None:
    held = push_busybox(test_registry, f"held-{time.time_ns()}")
    named = push_busybox(test_registry, f"named-{time.time_ns()}")  # in the registry too: no pull rescues it
    engine.bundles[named] = export(test_registry, held, tmp_path / "image.tar")
    ids = {image: configs(test_registry, image)["amd64"] for image in (held, named)}
    try:
        app = app_name(apps, "mixed")
        with pytest.raises(
            EngineError, match=f"{named}: refused bundle image.tar: it does not hold {named}"
        ) as refused:
            reconcile(engine, desired(manifest(app, named)))
        assert not refused.value.retryable
        assert containers(engine, app) == {}
        assert not set(ids.values()) & image_ids(docker_client(engine))  # neither the archive's image nor a pulled one
    finally:
        forget(docker_client(engine), *ids.values())


def test_a_bundle_the_engine_cannot_load_gives_way_to_a_pull_by_digest(
    engine: DockerEngine, apps: list[str], test_registry: Registry, tmp_path: Path
) -> None:
    image = push_busybox(test_registry, f"damaged-{time.time_ns()}")
    archive = export(test_registry, image, tmp_path / "image.tar")
    # One byte of the layer changed on the device's disk after verification: the engine refuses the layer.
    layer = document(test_registry, image)["layers"][0]
    with tarfile.open(archive) as tar:
        offset = tar.getmember(f"blobs/sha256/{layer['digest'][7:]}").offset_data
    with archive.open("r+b") as data:
        data.seek(offset + layer["size"] // 2)
        byte = data.read(1)
        data.seek(-1, 1)
        data.write(bytes([byte[0] ^ 0xFF]))
    engine.bundles[image] = archive
    config = configs(test_registry, image)["amd64"]
    try:
        app = app_name(apps, "pulled")
        reconcile(engine, desired(manifest(app, image)))
        wait_running(engine, app, 2)
        assert docker_client(engine).images.get(image).id == config  # pulled: the engine knows it by its digest
        reconcile(engine, desired())
        forget(docker_client(engine), config)

        # Where the registry cannot be reached either, the error says why the bundle failed and why the pull did.
        unreachable = f"127.0.0.1:9/{image.split('/', 1)[1]}"
        engine.bundles[unreachable] = archive
        with pytest.raises(EngineError, match=r"(?s)load .* from image\.tar: .*; pulling it instead failed too: pull "):
            reconcile(engine, desired(manifest(app_name(apps, "offline"), unreachable)))
    finally:
        forget(docker_client(engine), config)

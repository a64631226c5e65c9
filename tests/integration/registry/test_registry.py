"""Tag resolution, architectures, release builds and OCI archive export against a real registry process."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from edgefleet.bundles import DOCKER_MANIFEST, INDEX_TYPES, OCI_INDEX, REF_NAME_ANNOTATION
from edgefleet.cli.main import main
from edgefleet.manifest import IMAGE_BY_DIGEST, parse_manifest
from edgefleet.publisher.registry import (
    RegistryClient,
    RegistryError,
    RegistryLimits,
    RegistryUnavailableError,
)
from edgefleet.publisher.release import BuildError, build, load_build
from edgefleet.releases import bundle_path

from .conftest import TOKEN_SERVICE, Registry, TokenRegistry, free_port, sha256

pytestmark = pytest.mark.integration


@pytest.fixture
def client(registry: Registry) -> RegistryClient:
    with RegistryClient(insecure=[registry.host]) as instance:
        yield instance


def write_app(directory: Path, images: dict[str, str], *, architectures: str | None = None) -> Path:
    """An app directory whose compose.yaml runs `images` (service -> image), with a comment to keep."""
    services = "".join(f"  {name}:\n    image: {image}  # pinned by release build\n" for name, image in images.items())
    policies = "".join(f"    {name}:\n      resources: {{memory: 64m, cpus: 0.5, pids: 64}}\n" for name in images)
    arch_line = f"  architectures: {architectures}\n" if architectures else ""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(
        "# sensor app\nservices:\n"
        + services
        + "x-edgefleet:\n  app: sensor\n  version: 1.0.0\n"
        + arch_line
        + "  services:\n"
        + policies
    )
    return directory


# --- resolve -------------------------------------------------------------------------------


def test_a_multi_arch_tag_resolves_to_the_digest_of_its_index(registry: Registry, client: RegistryClient):
    repo = registry.repo("acme/multi")
    index, body = registry.push_index(repo, "1.0", ("amd64", "arm64"))

    resolved = client.resolve(f"{registry.host}/{repo}:1.0")

    assert resolved.image == f"{registry.host}/{repo}@{sha256(body)}"
    assert resolved.digest == index["digest"]
    # The attestation entry (platform unknown/unknown) is not an architecture.
    assert resolved.architectures == ("amd64", "arm64")


def test_a_single_arch_docker_manifest_takes_its_architecture_from_the_config(
    registry: Registry, client: RegistryClient
):
    repo = registry.repo("acme/single")
    descriptor, body = registry.push_image(repo, arch="arm", tag="2.1", docker=True)
    assert descriptor["mediaType"] == DOCKER_MANIFEST

    resolved = client.resolve(f"{registry.host}/{repo}:2.1")

    assert resolved.image == f"{registry.host}/{repo}@{sha256(body)}"
    assert resolved.architectures == ("arm",)
    assert client.resolve(resolved.image) == resolved  # by digest: the same answer


def test_a_docker_manifest_list_resolves_like_an_oci_index(registry: Registry, client: RegistryClient):
    repo = registry.repo("acme/list")
    _, body = registry.push_index(repo, "3", ("arm64", "riscv64", "amd64"), attestation=False, docker=True)

    resolved = client.resolve(f"{registry.host}/{repo}:3")

    assert resolved.digest == sha256(body)
    assert resolved.architectures == ("amd64", "arm64", "riscv64")


def test_architectures_edgefleet_does_not_know_and_other_systems_are_left_out(
    registry: Registry, client: RegistryClient
):
    repo = registry.repo("acme/odd")
    registry.push_index(repo, "1", ("amd64", "mips64le"), attestation=False)
    registry.push_image(repo, arch="amd64", os="windows", tag="win")

    assert client.resolve(f"{registry.host}/{repo}:1").architectures == ("amd64",)
    assert client.resolve(f"{registry.host}/{repo}:win").architectures == ()


def test_an_unknown_tag_is_a_clear_error(registry: Registry, client: RegistryClient):
    repo = registry.repo("acme/known")
    registry.push_image(repo, arch="amd64", tag="1.0")

    with pytest.raises(RegistryError) as error:
        client.resolve(f"{registry.host}/{repo}:9.9")

    message = str(error.value)
    assert not isinstance(error.value, RegistryUnavailableError)
    assert message.startswith(f"{registry.host}/{repo}:9.9: ")
    assert "not found" in message
    assert "MANIFEST_UNKNOWN" in message
    assert "\n" not in message


def test_an_unknown_digest_is_a_clear_error(registry: Registry, client: RegistryClient):
    repo = registry.repo("acme/known")
    registry.push_image(repo, arch="amd64", tag="1.0")

    with pytest.raises(RegistryError, match="not found"):
        client.resolve(f"{registry.host}/{repo}@sha256:{'0' * 64}")


def test_an_unreachable_registry_is_unavailable_and_names_the_image():
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    with RegistryClient(insecure=[host]) as client, pytest.raises(RegistryUnavailableError) as error:
        client.resolve(f"{host}/acme/sensor:1.0")

    assert str(error.value).startswith(f"{host}/acme/sensor:1.0: cannot reach {host}: ")
    assert "\n" not in str(error.value)


def test_a_registry_not_listed_as_insecure_is_only_tried_over_https(registry: Registry):
    repo = registry.repo("acme/tls")
    registry.push_image(repo, arch="amd64", tag="1")

    with RegistryClient() as client, pytest.raises(RegistryUnavailableError, match="cannot reach"):
        client.resolve(f"{registry.host}/{repo}:1")  # a TLS handshake with a plain-HTTP server fails


def test_an_oversized_manifest_is_refused(registry: Registry):
    repo = registry.repo("acme/big")
    image, _ = registry.push_image(repo, arch="amd64")
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{**image, "platform": {"architecture": "amd64", "os": "linux"}}],
            "annotations": {"padding": "x" * 300_000},
        }
    ).encode()
    registry.push_manifest(repo, "huge", body, OCI_INDEX)

    limits = RegistryLimits(manifest_bytes=256 * 1024)
    with RegistryClient(insecure=[registry.host], limits=limits) as client:
        with pytest.raises(RegistryError, match="larger than 262144 bytes"):
            client.resolve(f"{registry.host}/{repo}:huge")
        with pytest.raises(RegistryError, match="larger than 262144 bytes"):
            client.export(f"{registry.host}/{repo}@{sha256(body)}", Path("/nonexistent/never-written.tar"))
    with RegistryClient(insecure=[registry.host]) as client:  # the default limit (4 MiB) takes it
        assert client.resolve(f"{registry.host}/{repo}:huge").architectures == ("amd64",)


def test_a_manifest_whose_bytes_do_not_match_its_digest_is_refused(registry: Registry, client: RegistryClient):
    repo = registry.repo("acme/tampered")
    _, body = registry.push_index(repo, "1.0", ("amd64",), attestation=False)
    stored = registry.blob_file(sha256(body))
    stored.write_bytes(body.replace(b'"amd64"', b'"arm64"'))  # same length, other content

    with pytest.raises(RegistryError, match="not the digest of the bytes sent"):
        client.resolve(f"{registry.host}/{repo}:1.0")
    with pytest.raises(RegistryError, match="whose digest is"):
        client.resolve(f"{registry.host}/{repo}@{sha256(body)}")


# --- anonymous token authentication ------------------------------------------------------


def test_anonymous_pull_tokens_from_the_registrys_challenge(registry: Registry, token_registry: TokenRegistry):
    repo = registry.repo("acme/public")
    _, body = registry.push_index(repo, "1.0", ("amd64", "arm64"))
    insecure = [token_registry.host, token_registry.token_host]
    before = len(token_registry.tokens.requests)

    with RegistryClient(insecure=insecure) as client:
        resolved = client.resolve(f"{token_registry.host}/{repo}:1.0")
        again = client.resolve(f"{token_registry.host}/{repo}:1.0")

    assert resolved == again
    assert resolved.digest == sha256(body)
    assert resolved.architectures == ("amd64", "arm64")
    # One token, asked for with the challenge's service and a pull-only scope, served the client's requests.
    asked = token_registry.tokens.requests[before:]
    assert asked == [{"service": [TOKEN_SERVICE], "scope": [f"repository:{repo}:pull"]}]


def test_export_through_token_authentication(registry: Registry, token_registry: TokenRegistry, tmp_path: Path):
    repo = registry.repo("acme/public")
    index, _ = registry.push_index(repo, "1.0", ("amd64",))
    insecure = [token_registry.host, token_registry.token_host]
    image = f"{token_registry.host}/{repo}@{index['digest']}"

    with RegistryClient(insecure=insecure) as client:
        client.export(image, tmp_path / "image.tar")

    check_layout(tmp_path / "image.tar", image)


def test_a_token_realm_over_plain_http_must_be_listed_as_insecure(registry: Registry, token_registry: TokenRegistry):
    repo = registry.repo("acme/public")
    registry.push_image(repo, arch="amd64", tag="1")

    with RegistryClient(insecure=[token_registry.host]) as client, pytest.raises(RegistryError) as error:
        client.resolve(f"{token_registry.host}/{repo}:1")

    assert not isinstance(error.value, RegistryUnavailableError)
    assert f"refusing http://{token_registry.token_host}" in str(error.value)


# --- export --------------------------------------------------------------------------------


def check_layout(archive: Path, image: str) -> dict[str, bytes]:
    """Assert `archive` is a complete OCI image layout of `image` that `docker load` reads too; return its files."""
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    for member in members:
        assert not member.name.startswith("/")
        assert ".." not in member.name.split("/")
        assert member.isfile() or member.isdir()
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    [top] = index["manifests"]
    assert top["annotations"][REF_NAME_ANNOTATION] == image
    assert top["digest"] == image.rsplit("@", 1)[1]
    blobs = {name.removeprefix("blobs/sha256/"): data for name, data in files.items() if name.startswith("blobs/")}
    docker_files = {"manifest.json", "repositories"}
    assert set(files) == {"oci-layout", "index.json"} | docker_files | {f"blobs/sha256/{h}" for h in blobs}
    for hexdigest, data in blobs.items():
        assert hashlib.sha256(data).hexdigest() == hexdigest

    reached: set[str] = set()
    loadable: list[dict[str, object]] = []  # what manifest.json must list: every Linux image, tagged by its digest
    name = image.rsplit("@", 1)[0]

    def walk(descriptor: dict[str, object], *, linux: bool) -> None:
        digest = str(descriptor["digest"])
        hexdigest = digest.removeprefix("sha256:")
        assert hexdigest in blobs, f"{digest} is referenced but missing"
        assert len(blobs[hexdigest]) == descriptor["size"]
        reached.add(hexdigest)
        if descriptor["mediaType"] in INDEX_TYPES:
            for entry in json.loads(blobs[hexdigest])["manifests"]:
                platform = entry.get("platform") or {}
                walk(entry, linux=platform.get("os") == "linux" and platform.get("architecture") != "unknown")
        elif "manifest" in str(descriptor["mediaType"]):
            manifest = json.loads(blobs[hexdigest])
            for entry in (manifest["config"], *manifest["layers"]):
                walk(entry, linux=False)
            if linux:
                loadable.append(
                    {
                        "Config": f"blobs/{manifest['config']['digest'].replace(':', '/')}",
                        "RepoTags": [f"{name}:sha256-{hexdigest}"],
                        "Layers": [f"blobs/{layer['digest'].replace(':', '/')}" for layer in manifest["layers"]],
                    }
                )

    walk(top, linux=True)
    assert reached == set(blobs), "blobs nothing references"
    assert json.loads(files["manifest.json"]) == loadable
    repositories = json.loads(files["repositories"])
    assert repositories == {
        name: {entry["RepoTags"][0].rsplit(":", 1)[1]: entry["Layers"][-1].rsplit("/", 1)[1] for entry in loadable}
    }
    return files


def test_export_writes_a_complete_oci_layout_of_a_multi_arch_image(
    registry: Registry, client: RegistryClient, tmp_path: Path
):
    repo = registry.repo("acme/multi")
    index, _ = registry.push_index(repo, "1.0", ("amd64", "arm64"))
    image = f"{registry.host}/{repo}@{index['digest']}"

    client.export(image, tmp_path / "image.tar")

    files = check_layout(tmp_path / "image.tar", image)
    # index + 3 manifests (amd64, arm64, attestation) + their configs (the attestation's is shared
    # with nothing) + their layers
    assert len([name for name in files if name.startswith("blobs/")]) == 1 + 3 + 3 + 3
    # Docker loads the two images, not the attestation (its platform is unknown/unknown).
    assert len(json.loads(files["manifest.json"])) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tar"]


def test_export_of_a_single_docker_manifest(registry: Registry, client: RegistryClient, tmp_path: Path):
    repo = registry.repo("acme/single")
    descriptor, _ = registry.push_image(repo, arch="arm64", tag="1", docker=True)
    image = f"{registry.host}/{repo}@{descriptor['digest']}"

    client.export(image, tmp_path / "image.tar")

    files = check_layout(tmp_path / "image.tar", image)
    assert json.loads(files["index.json"])["manifests"][0]["mediaType"] == DOCKER_MANIFEST


def test_a_blob_that_does_not_match_its_digest_fails_the_export_and_leaves_nothing(
    registry: Registry, client: RegistryClient, tmp_path: Path
):
    repo = registry.repo("acme/corrupt")
    descriptor, body = registry.push_image(repo, arch="amd64", tag="1")
    layer = json.loads(body)["layers"][0]
    stored = registry.blob_file(layer["digest"])
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    stored.write_bytes(bytes(data))
    out = tmp_path / "images"
    out.mkdir()

    with pytest.raises(RegistryError, match=f"content does not match its digest {layer['digest']}"):
        client.export(f"{registry.host}/{repo}@{descriptor['digest']}", out / "image.tar")

    assert list(out.iterdir()) == []


def test_only_images_pinned_by_digest_are_exported(registry: Registry, client: RegistryClient, tmp_path: Path):
    with pytest.raises(RegistryError, match="only images pinned by digest"):
        client.export(f"{registry.host}/acme/sensor:1.0", tmp_path / "image.tar")
    assert not (tmp_path / "image.tar").exists()


def test_an_archive_over_its_size_limit_is_not_written(registry: Registry, tmp_path: Path):
    repo = registry.repo("acme/multi")
    index, _ = registry.push_index(repo, "1.0", ("amd64", "arm64"))

    limits = RegistryLimits(archive_bytes=2048)
    with RegistryClient(insecure=[registry.host], limits=limits) as client, pytest.raises(RegistryError, match="limit"):
        client.export(f"{registry.host}/{repo}@{index['digest']}", tmp_path / "image.tar")

    assert list(tmp_path.iterdir()) == []


# --- release build ---------------------------------------------------------------------------


def test_build_with_tags_writes_a_compose_file_pinned_by_digest(
    registry: Registry, client: RegistryClient, tmp_path: Path
):
    multi, single = registry.repo("acme/multi"), registry.repo("acme/single")
    _, index_body = registry.push_index(multi, "1.0", ("amd64", "arm64"))
    _, manifest_body = registry.push_image(single, arch="arm64", tag="2.0", docker=True)
    app = write_app(
        tmp_path / "app", {"main": f"{registry.host}/{multi}:1.0", "helper": f"{registry.host}/{single}:2.0"}
    )

    result = build(app, tmp_path / "out", resolver=client.resolve)

    written = (tmp_path / "out" / "compose.yaml").read_text()
    release = parse_manifest(written)
    images = {service.name: service.compose.image for service in release.services}
    assert images == {
        "main": f"{registry.host}/{multi}@{sha256(index_body)}",
        "helper": f"{registry.host}/{single}@{sha256(manifest_body)}",
    }
    assert all(IMAGE_BY_DIGEST.match(image) for image in images.values())
    assert written.count("# pinned by release build") == 2  # the rest of the file is kept as written
    assert written.startswith("# sensor app\n")
    # No architectures in the manifest: the release gets those every image has.
    assert result.architectures == ("arm64",)
    assert load_build(tmp_path / "out").architectures == ("arm64",)


def test_declared_architectures_must_all_be_in_every_image(registry: Registry, client: RegistryClient, tmp_path: Path):
    multi, single = registry.repo("acme/multi"), registry.repo("acme/single")
    registry.push_index(multi, "1.0", ("amd64", "arm64"))
    registry.push_image(single, arch="arm64", tag="2.0")
    images = {"main": f"{registry.host}/{multi}:1.0", "helper": f"{registry.host}/{single}:2.0"}

    ok = build(write_app(tmp_path / "ok", images, architectures="[arm64]"), tmp_path / "out", resolver=client.resolve)
    assert ok.architectures == ("arm64",)

    app = write_app(tmp_path / "app", images, architectures="[amd64, arm64]")
    with pytest.raises(BuildError) as error:
        build(app, tmp_path / "out2", resolver=client.resolve)
    assert f"image {registry.host}/{single}:2.0 has no amd64 variant (it has arm64)" in str(error.value)
    assert not (tmp_path / "out2").exists()


def test_images_with_no_architecture_in_common_make_no_release(
    registry: Registry, client: RegistryClient, tmp_path: Path
):
    amd, arm = registry.repo("acme/amd"), registry.repo("acme/arm")
    registry.push_image(amd, arch="amd64", tag="1")
    registry.push_image(arm, arch="arm", tag="1")
    app = write_app(tmp_path / "app", {"main": f"{registry.host}/{amd}:1", "helper": f"{registry.host}/{arm}:1"})

    with pytest.raises(BuildError, match="the images have no architecture in common") as error:
        build(app, tmp_path / "out", resolver=client.resolve)
    assert f"{registry.host}/{amd}:1: amd64" in str(error.value)
    assert f"{registry.host}/{arm}:1: arm" in str(error.value)


def test_pinned_images_are_looked_up_only_when_architectures_are_not_declared(
    registry: Registry, client: RegistryClient, tmp_path: Path
):
    multi = registry.repo("acme/multi")
    index, _ = registry.push_index(multi, "1.0", ("amd64", "arm64"))
    pinned = f"{registry.host}/{multi}@{index['digest']}"
    offline = f"127.0.0.1:{free_port()}/acme/gone@sha256:{'a' * 64}"

    looked_up = build(write_app(tmp_path / "a", {"main": pinned}), tmp_path / "out-a", resolver=client.resolve)
    assert looked_up.architectures == ("amd64", "arm64")
    # Declared architectures: pinned images are taken as written, no registry needed.
    declared = build(
        write_app(tmp_path / "b", {"main": offline}, architectures="[riscv64]"),
        tmp_path / "out-b",
        resolver=client.resolve,
    )
    assert declared.architectures == ("riscv64",)
    assert yaml.safe_load((tmp_path / "out-b" / "compose.yaml").read_text())["services"]["main"]["image"] == offline


def test_build_without_a_resolver_still_requires_digests(registry: Registry, tmp_path: Path):
    app = write_app(tmp_path / "app", {"main": f"{registry.host}/acme/sensor:1.0"}, architectures="[amd64]")

    with pytest.raises(BuildError, match=r"must be pinned by digest \(image@sha256:...\)"):
        build(app, tmp_path / "out")


def test_build_bundle_exports_every_image(registry: Registry, client: RegistryClient, tmp_path: Path):
    multi, single = registry.repo("acme/multi"), registry.repo("acme/single")
    registry.push_index(multi, "1.0", ("amd64", "arm64"))
    registry.push_index(single, "2.0", ("arm64", "amd64"), attestation=False)
    app = write_app(
        tmp_path / "app", {"main": f"{registry.host}/{multi}:1.0", "helper": f"{registry.host}/{single}:2.0"}
    )

    result = build(app, tmp_path / "out", resolver=client.resolve, exporter=client.export)

    assert result.architectures == ("amd64", "arm64")
    assert len(result.bundles) == 2
    for target, image in result.bundles.items():
        assert target == bundle_path("sensor", "1.0.0", image)
        check_layout(tmp_path / "out" / result.files[target], image)


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_build_resolves_and_bundles(registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    repo = registry.repo("acme/multi")
    registry.push_index(repo, "1.0", ("amd64", "arm64"))
    app = write_app(tmp_path / "app", {"main": f"{registry.host}/{repo}:1.0"})
    argv = ["release", "build", str(app), "--out", str(tmp_path / "out"), "--bundle"]

    assert main([*argv, "--insecure-registry", registry.host]) == 0

    assert "built sensor@1.0.0 (amd64, arm64)" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "images").glob("sha256-*.tar"))) == 1


def test_cli_unreachable_registry_is_exit_4_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    host = f"127.0.0.1:{free_port()}"
    app = write_app(tmp_path / "app", {"main": f"{host}/acme/sensor:1.0"})

    code = main(["release", "build", str(app), "--out", str(tmp_path / "out"), "--insecure-registry", host])

    assert code == 4
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(f"error: {host}/acme/sensor:1.0: cannot reach {host}")
    assert lines[1].startswith("hint: ")
    assert len(lines) == 2


def test_cli_unknown_tag_and_bad_insecure_registry_are_usage_errors(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    app = write_app(tmp_path / "app", {"main": f"{registry.host}/acme/nothing-here:1.0"})
    argv = ["release", "build", str(app), "--out", str(tmp_path / "out")]

    assert main([*argv, "--insecure-registry", registry.host]) == 2
    assert "acme/nothing-here:1.0: manifest: not found" in capsys.readouterr().err
    assert main([*argv, "--insecure-registry", "http://x/"]) == 2
    assert "is not a registry HOST[:PORT]" in capsys.readouterr().err

"""The bundle format's pure parts: manifest.json and tags, index.json, documents checked by digest, platforms."""

from __future__ import annotations

import json

import pytest

from edgefleet.bundles import (
    CONTAINERD_NAME_ANNOTATION,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME_ANNOTATION,
    DockerImage,
    OciIndex,
    OciManifest,
    docker_archive_files,
    docker_image,
    familiar,
    layout_index,
    loaded_tag,
    pick_platform,
    read_document,
    sha256,
)
from edgefleet.errors import BundleError

M = "sha256:" + "a" * 64
C = "sha256:" + "c" * 64
L1, L2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("docker.io/library/busybox", "busybox"),
        ("docker.io/acme/sensor", "acme/sensor"),
        ("docker.io/library/a/b", "library/a/b"),
        ("ghcr.io/acme/sensor", "ghcr.io/acme/sensor"),
        ("127.0.0.1:5000/library/busybox", "127.0.0.1:5000/library/busybox"),
    ],
)
def test_names_are_written_as_docker_save_writes_them(name: str, short: str) -> None:
    assert familiar(name) == short
    assert familiar(loaded_tag(name, M)) == f"{short}:sha256-{'a' * 64}"


def test_the_tag_names_the_manifest_digest_and_is_a_valid_docker_tag() -> None:
    tag = loaded_tag("ghcr.io/acme/sensor", M).rsplit(":", 1)[1]
    assert tag == "sha256-" + "a" * 64
    assert len(tag) <= 128
    assert tag[0].isalnum()
    assert set(tag) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def test_manifest_json_and_repositories_have_docker_saves_shape() -> None:
    files = docker_archive_files(
        [
            DockerImage(config=C, layers=(L1, L2), tag=loaded_tag("docker.io/library/busybox", M)),
            DockerImage(config=L1, layers=(), tag="ghcr.io/acme/x:v1"),
        ]
    )
    assert json.loads(files["manifest.json"]) == [
        {
            "Config": f"blobs/sha256/{'c' * 64}",
            "RepoTags": [f"busybox:sha256-{'a' * 64}"],
            "Layers": [f"blobs/sha256/{'1' * 64}", f"blobs/sha256/{'2' * 64}"],
        },
        {"Config": f"blobs/sha256/{'1' * 64}", "RepoTags": ["ghcr.io/acme/x:v1"], "Layers": []},
    ]
    # The top layer of each tagged image, as `docker save` names it (nothing for an image without layers).
    assert json.loads(files["repositories"]) == {"busybox": {f"sha256-{'a' * 64}": "2" * 64}}


def test_docker_image_lists_a_manifests_config_and_layers_in_order() -> None:
    manifest = OciManifest.model_validate(
        {
            "schemaVersion": 2,
            "config": {"mediaType": "x", "digest": C, "size": 3},
            "layers": [{"mediaType": "y", "digest": d, "size": 1} for d in (L2, L1)],
        }
    )
    assert docker_image("ghcr.io/a/b", M, manifest) == DockerImage(C, (L2, L1), f"ghcr.io/a/b:sha256-{'a' * 64}")


def test_index_json_names_the_one_image_for_oci_tools_and_containerd() -> None:
    index = json.loads(layout_index(name="ghcr.io/a/b", media_type=DOCKER_LIST, digest=M, size=42))
    assert index["mediaType"] == OCI_INDEX
    [entry] = index["manifests"]
    assert entry["mediaType"] == DOCKER_LIST
    assert (entry["digest"], entry["size"]) == (M, 42)
    assert entry["annotations"] == {
        REF_NAME_ANNOTATION: f"ghcr.io/a/b@{M}",
        CONTAINERD_NAME_ANNOTATION: f"ghcr.io/a/b@{M}",
    }


def manifest_body(**extra: object) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "config": {"mediaType": "c", "digest": C, "size": 1}, "layers": [], **extra}
    ).encode()


def test_a_document_is_parsed_only_from_bytes_that_hash_to_its_digest() -> None:
    body = manifest_body(mediaType=OCI_MANIFEST)
    kind, content = read_document(body, digest=sha256(body))
    assert kind == OCI_MANIFEST
    assert isinstance(content, OciManifest)
    with pytest.raises(BundleError, match="does not hash to its digest"):
        read_document(body + b" ", digest=sha256(body))


def test_a_document_without_a_media_type_takes_its_descriptors() -> None:
    body = manifest_body()
    assert read_document(body, digest=sha256(body), media_type=DOCKER_MANIFEST)[0] == DOCKER_MANIFEST
    index = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    kind, content = read_document(index, digest=sha256(index), media_type=OCI_INDEX)
    assert (kind, content) == (OCI_INDEX, OciIndex(schemaVersion=2, manifests=[]))
    with pytest.raises(BundleError, match="not an image manifest or index"):
        read_document(body, digest=sha256(body))


@pytest.mark.parametrize(
    ("body", "media_type", "message"),
    [
        (b"{not json", None, "not JSON"),
        (manifest_body(mediaType=OCI_MANIFEST), DOCKER_MANIFEST, "declares"),
        (manifest_body(mediaType="application/vnd.in-toto+json"), None, "not an image manifest or index"),
        (
            json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(),
            None,
            "malformed at config",
        ),
        (json.dumps({"schemaVersion": 1, "mediaType": OCI_INDEX, "manifests": []}).encode(), None, "schemaVersion"),
        (b"[1, 2]", OCI_MANIFEST, "malformed"),
    ],
)
def test_a_bad_document_is_refused(body: bytes, media_type: str | None, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        read_document(body, digest=sha256(body), media_type=media_type)


def index_of(*platforms: dict[str, str] | None, media_type: str = OCI_MANIFEST) -> OciIndex:
    return OciIndex.model_validate(
        {
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": media_type, "digest": "sha256:" + str(i) * 64, "size": 1, "platform": platform}
                for i, platform in enumerate(platforms)
            ],
        }
    )


def picked(index: OciIndex, arch: str, variant: str | None = None) -> int | None:
    entry = pick_platform(index, arch=arch, variant=variant)
    return None if entry is None else int(entry.digest[-1])


def test_the_engines_platform_is_picked_from_an_index() -> None:
    index = index_of(
        {"os": "unknown", "architecture": "unknown"},  # a build attestation
        {"os": "linux", "architecture": "arm", "variant": "v6"},
        {"os": "linux", "architecture": "arm", "variant": "v7"},
        {"os": "windows", "architecture": "amd64"},
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
        None,
    )
    assert picked(index, "amd64") == 4
    assert picked(index, "x86_64") == 4  # the machine's name for it
    assert picked(index, "arm", "v7") == 2
    assert picked(index, "arm", "v6") == 1
    assert picked(index, "arm") == 1  # variant unknown, none without one: the first
    assert picked(index, "arm64") == 5
    assert picked(index, "arm64", "v8") == 5
    assert picked(index, "riscv64") is None
    assert picked(index, "unknown") is None


def test_an_entry_without_a_variant_is_taken_when_the_variant_has_none() -> None:
    index = index_of(
        {"os": "linux", "architecture": "arm64", "variant": "v9"}, {"os": "linux", "architecture": "arm64"}
    )
    assert picked(index, "arm64", "v8") == 1
    assert picked(index, "aarch64", "v9") == 0


def test_an_index_entry_that_is_not_an_image_is_never_picked() -> None:
    assert picked(index_of({"os": "linux", "architecture": "amd64"}, media_type=OCI_INDEX), "amd64") is None

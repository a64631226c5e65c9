"""Image references and registry challenges are parsed the way container engines do, and hostile text is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.manifest import IMAGE_BY_DIGEST
from edgefleet.publisher.registry import (
    MAX_REFERENCE_LENGTH,
    RegistryError,
    blob_path,
    parse_challenge,
    parse_reference,
    parse_registry_host,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "name"),
    [
        ("nginx", "registry-1.docker.io", "library/nginx", "latest", None, "docker.io/library/nginx"),
        ("nginx:1.25", "registry-1.docker.io", "library/nginx", "1.25", None, "docker.io/library/nginx"),
        ("acme/sensor:v2", "registry-1.docker.io", "acme/sensor", "v2", None, "docker.io/acme/sensor"),
        ("docker.io/nginx", "registry-1.docker.io", "library/nginx", "latest", None, "docker.io/library/nginx"),
        ("index.docker.io/acme/x:1", "registry-1.docker.io", "acme/x", "1", None, "docker.io/acme/x"),
        (
            "registry-1.docker.io/library/busybox",
            "registry-1.docker.io",
            "library/busybox",
            "latest",
            None,
            "docker.io/library/busybox",
        ),
        ("ghcr.io/acme/sensor:1.0.0", "ghcr.io", "acme/sensor", "1.0.0", None, "ghcr.io/acme/sensor"),
        ("quay.io/a/b/c/d:x_Y-z.1", "quay.io", "a/b/c/d", "x_Y-z.1", None, "quay.io/a/b/c/d"),
        ("127.0.0.1:5000/acme/sensor:1.0", "127.0.0.1:5000", "acme/sensor", "1.0", None, None),
        ("localhost/sensor", "localhost", "sensor", "latest", None, "localhost/sensor"),
        ("localhost:5000/sensor", "localhost:5000", "sensor", "latest", None, None),
        ("Registry.Example/sensor", "registry.example", "sensor", "latest", None, "registry.example/sensor"),
        (f"nginx@{DIGEST}", "registry-1.docker.io", "library/nginx", None, DIGEST, "docker.io/library/nginx"),
        (f"reg.example:443/a/b:1.0@{DIGEST}", "reg.example:443", "a/b", "1.0", DIGEST, None),
        ("a/b__c/d-e/f.g--h:t", "registry-1.docker.io", "a/b__c/d-e/f.g--h", "t", None, "docker.io/a/b__c/d-e/f.g--h"),
        (
            "host:5000",
            "registry-1.docker.io",
            "library/host",
            "5000",
            None,
            "docker.io/library/host",
        ),  # as docker reads it
    ],
)
def test_references(text, registry, repository, tag, digest, name):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ref.name == (name or f"{registry}/{repository}")
    assert str(ref) == text
    assert ref.target == (digest or tag)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "non-empty"),
        ("nginx:", "bad tag"),
        ("nginx:-1", "bad tag"),
        (f"nginx:{'a' * 129}", "bad tag"),
        ("nginx:a/b", "bad registry host"),  # a ':' before the last '/' belongs to a host: 'nginx:a'
        ("NGINX", "bad repository component"),
        ("acme/Sensor", "bad repository component"),
        ("/nginx", "bad repository component"),
        ("nginx/", "bad repository component"),
        ("acme//sensor", "bad repository component"),
        ("reg.example/../etc/passwd", "bad repository component"),
        ("reg.example/./x", "bad repository component"),
        ("reg.example/a_-b", "bad repository component"),
        ("reg.example/a___b", "bad repository component"),
        ("-reg.example/x", "bad registry host"),
        ("reg.example:99999/x", "bad registry host"),
        ("reg.example:0/x", "bad registry host"),
        ("reg_example.com/x", "bad registry host"),
        ("[::1]:5000/x", "bad registry host"),
        ("user:pass@reg.example/x", "digest"),
        ("https://reg.example/x", "bad registry host"),
        ("nginx@sha256:abc", "digest"),
        (f"nginx@sha512:{'a' * 128}", "digest"),
        (f"nginx@sha256:{'A' * 64}", "digest"),
        (f"nginx@{DIGEST}@{DIGEST}", "digest"),
        ("nginx@", "digest"),
        ("nginx latest", "printable ASCII"),
        ("nginx\n:1", "printable ASCII"),
        ("nginx\x00", "printable ASCII"),
        ("nginx\t", "printable ASCII"),
        ("nginx:１", "printable ASCII"),
        ("ngïnx", "printable ASCII"),
        ("a" * (MAX_REFERENCE_LENGTH + 1), f"longer than {MAX_REFERENCE_LENGTH}"),
        ("reg.example/" + "a" * 250, "longer than 255"),
        (":tag", "bad repository component"),
        ("@" + DIGEST, "bad repository component"),
    ],
)
def test_bad_references_are_refused_with_a_reason(text, why):
    with pytest.raises(RegistryError) as error:
        parse_reference(text)
    message = str(error.value)
    assert why in message
    assert "\n" not in message
    assert len(message) < 400  # hostile input is shown shortened


@given(st.text(max_size=600))
def test_any_text_parses_or_is_a_registry_error(text):
    try:
        ref = parse_reference(text)
    except RegistryError:
        return
    assert parse_reference(ref.canonical) == ref
    assert IMAGE_BY_DIGEST.match(ref.pinned(DIGEST)) or "__" in ref.repository or "--" in ref.repository


@given(
    st.lists(st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True), min_size=1, max_size=4),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
)
def test_generated_references_round_trip(components, tag):
    text = "reg.example:5000/" + "/".join(components) + (f":{tag}" if tag else "")
    ref = parse_reference(text)
    assert ref.registry == "reg.example:5000"
    assert ref.repository == "/".join(components)
    assert ref.tag == (tag or "latest")
    assert ref.pinned(DIGEST) == f"reg.example:5000/{ref.repository}@{DIGEST}"
    assert IMAGE_BY_DIGEST.match(ref.pinned(DIGEST))


@pytest.mark.parametrize("text", ["127.0.0.1:5000", "Registry.Example", "reg.example:443", "localhost"])
def test_registry_hosts(text):
    assert parse_registry_host(text) == text.lower()


@pytest.mark.parametrize("text", ["", "http://x", "x/", "x:", "x:65536", "x y", "[::1]", "a" * 300, "x:5000:1"])
def test_bad_registry_hosts(text):
    with pytest.raises(RegistryError, match="not a registry HOST"):
        parse_registry_host(text)


def test_blob_path():
    assert blob_path(DIGEST) == f"blobs/sha256/{DIGEST.removeprefix('sha256:')}"


# --- WWW-Authenticate challenges ----------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "params"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/nginx:pull"',
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/nginx:pull",
            },
        ),
        (
            'bearer realm="https://r/t", scope="repository:a/b:pull,push"',
            {"realm": "https://r/t", "scope": "repository:a/b:pull,push"},
        ),
        ("Bearer realm=https://r/t,service=r", {"realm": "https://r/t", "service": "r"}),
        ('Bearer realm="a \\"quoted\\" value"', {"realm": 'a "quoted" value'}),
        ("Bearer", {}),
        ('Basic realm="Registry Realm"', None),
        ("", None),
    ],
)
def test_challenges(header, params):
    assert parse_challenge(header) == params


@pytest.mark.parametrize(
    "header",
    ['Bearer realm="unterminated', "Bearer realm", "Bearer =x", 'Bearer realm="a" junk', "Bearer " + "a=b," * 2000],
)
def test_bad_challenges(header):
    with pytest.raises(RegistryError):
        parse_challenge(header)

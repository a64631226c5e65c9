"""Host paths are judged in their one canonical spelling: no spelling of a denied path passes the manifest
check (release build, the hub, the device's parser) or the agent's own check before a mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.hostpaths import bind_problem, protected_paths
from edgefleet.agent.policy import parse_policy, refusals
from edgefleet.manifest import (
    ENGINE_SOCKETS,
    PROTECTED_HOST_PATHS,
    SENSITIVE_HOST_PATHS,
    canonical_path,
    host_path_problem,
    parse_manifest,
    parse_permission,
)

DENIED_ROOTS = ("/", *SENSITIVE_HOST_PATHS, *PROTECTED_HOST_PATHS, *ENGINE_SOCKETS)
ABOVE_PROTECTED = ("/var", "/var/lib", "/run/podman", "/etc", "/var/spool")
REQUIRED = (
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/usr",
    "/boot",
    "/etc",
    "/root",
    "/proc",
    "/sys",
    "/dev",
    "/var/spool/cron",
    "/var/lib/docker",
    "/var/lib/containers",
    "/var/lib/balena-engine",
    "/var/run/docker.sock",
    "/run/podman/podman.sock",
    "/var/lib/edgefleet",
    "/etc/edgefleet",
)
ALLOW_HOST_PATHS = parse_policy('allow = ["host-read:*", "host-write:*"]')
NO_SYMLINKS = canonical_path  # the pure part of the agent's check: this host's symlinks are tested on a real disk

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def spellings(draw: st.DrawFn, path: str) -> str:
    """`path` (canonical) written as the kernel would still read it: extra '/', '.' segments, a trailing '/'."""
    parts = [p for p in path.split("/") if p]
    text = ""
    for part in [*parts, None]:
        text += "/" * draw(st.integers(1, 3))
        text += "./" * draw(st.integers(0, 2))
        if part is not None:
            text += part
    if not draw(st.booleans()):
        text = text.rstrip("/") or "/" * draw(st.integers(1, 3))
    return text


@st.composite
def denied_spellings(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(DENIED_ROOTS))
    below = draw(st.lists(segment, max_size=3)) if base not in ENGINE_SOCKETS and base != "/" else []
    return draw(spellings("/".join([base.rstrip("/"), *below]) or "/"))


def manifest_with(permission: str) -> str:
    return f"""
services:
  web:
    image: registry.example/acme/web@sha256:{"a" * 64}
x-edgefleet:
  app: shop
  version: 1.0.0
  architectures: [amd64]
  services:
    web:
      resources: {{memory: 32m, cpus: 0.25, pids: 32}}
      permissions: ["{permission}"]
"""


@pytest.mark.parametrize("path", REQUIRED)
def test_every_path_a_container_escape_would_use_is_denied(path: str) -> None:
    assert host_path_problem(path) is not None
    assert host_path_problem(path + "/anything") is not None or path in ENGINE_SOCKETS


@pytest.mark.parametrize("path", ABOVE_PROTECTED)
def test_directories_above_protected_state_are_denied(path: str) -> None:
    assert host_path_problem(path) is not None


@pytest.mark.parametrize(
    "text", ["host-read://etc", "host-write://", "host-write:/", "host-read:/./etc", "host-read:/etc/", "host-read:///"]
)
def test_the_reported_spellings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="sensitive"):
        parse_permission(text)


@given(denied_spellings())
def test_no_spelling_of_a_denied_path_passes_either_check(text: str) -> None:
    for kind in ("host-read", "host-write"):
        with pytest.raises(ValueError, match=r"(cannot be|never) shared"):
            parse_permission(f"{kind}:{text}")
    assert bind_problem(text, resolve=NO_SYMLINKS) is not None


@given(st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/srv/" + "/".join(parts)).flatmap(spellings))
def test_allowed_paths_are_kept_in_their_one_spelling(text: str) -> None:
    canonical = canonical_path(text)
    assert canonical == os.path.normpath("/" + text.lstrip("/"))
    assert str(parse_permission(f"host-read:{text}")) == f"host-read:{canonical}"
    assert bind_problem(text, resolve=NO_SYMLINKS) is None


@pytest.mark.parametrize(
    ("text", "error"),
    [("srv", "absolute"), ("/srv/../etc", "'..'"), ("/srv/a\nb", "control"), ("/" + "a" * 2000, "at most")],
)
def test_malformed_host_paths(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        canonical_path(text)
    assert bind_problem(text, resolve=NO_SYMLINKS) is not None


def test_the_agent_refuses_its_own_paths_whatever_the_policy(tmp_path: Path) -> None:
    state = tmp_path / "agent-state"
    state.mkdir()
    own = protected_paths([state, None, "unix-socket-is-relative"])
    release = parse_manifest(manifest_with(f"host-write:{state}/data"))
    (refused,) = refusals(release, ALLOW_HOST_PATHS, protected=own)
    assert refused.permission == f"host-write:{state}/data"
    assert "edgefleet's state" in refused.reason
    above = parse_manifest(manifest_with(f"host-read:{tmp_path}"))
    assert refusals(above, ALLOW_HOST_PATHS, protected=own)
    assert refusals(parse_manifest(manifest_with("host-read:/srv/config")), ALLOW_HOST_PATHS, protected=own) == []


def test_a_symlink_to_a_denied_path_is_refused_by_the_agent(tmp_path: Path) -> None:
    (tmp_path / "config").symlink_to("/etc")
    (tmp_path / "ok").mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "via-state").symlink_to(tmp_path / "state")
    assert "leads to /etc" in (bind_problem(str(tmp_path / "config")) or "")
    assert bind_problem(str(tmp_path / "ok")) is None
    assert bind_problem(str(tmp_path / "via-state"), protected=protected_paths([tmp_path / "state"])) is not None

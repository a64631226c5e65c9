"""Signing a build offline: counters rise per app, releases are immutable, thresholds are enforced."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgefleet.publisher.errors import PublisherError
from edgefleet.publisher.keys import init_keys
from edgefleet.publisher.release import BuildError, build, sign
from edgefleet.releases import parse_custom
from tests.publishing import compose

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def make_build(tmp: Path, app: str, version: str, **kwargs: str) -> Path:
    source = tmp / f"src-{app}-{version}"
    source.mkdir()
    (source / "compose.yaml").write_text(compose(app, version, **kwargs))
    out = tmp / f"build-{app}-{version}"
    build(source, out)
    return out


def test_counters_rise_per_app_and_every_release_stays_listed(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)
    sign(make_build(tmp_path, "sensor", "1.0.0"), keys, now=NOW)
    sign(make_build(tmp_path, "analytics", "0.1.0"), keys, now=NOW)
    last = sign(make_build(tmp_path, "sensor", "1.1.0"), keys, now=NOW)

    counters = {
        path: getattr(parse_custom(t.custom), "release_counter", None) for path, t in last.signed.targets.items()
    }
    assert counters == {
        "sensor/1.0.0/compose.yaml": 1,
        "analytics/0.1.0/compose.yaml": 1,
        "sensor/1.1.0/compose.yaml": 2,
    }
    assert last.signed.version == 3


def test_a_release_is_signed_once(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)
    built = make_build(tmp_path, "sensor", "1.0.0")
    sign(built, keys, now=NOW)
    with pytest.raises(PublisherError, match="already signed"):
        sign(built, keys, now=NOW)


def test_threshold_not_met_signs_nothing(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys, threshold=2)
    next((keys / "targets").glob("*.key")).unlink()  # one holder is not here
    built = make_build(tmp_path, "sensor", "1.0.0")
    with pytest.raises(PublisherError, match="1 of the 2"):
        sign(built, keys, now=NOW)
    assert not (built / "targets.json").exists()
    assert not (keys / "repository" / "targets.json").exists()


def test_build_needs_architectures_and_a_valid_manifest(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "compose.yaml").write_text(compose().replace("  architectures: [amd64, arm64]\n", ""))
    with pytest.raises(BuildError, match="architectures"):
        build(source, tmp_path / "out")
    (source / "compose.yaml").write_text(compose().replace("restart: unless-stopped", "privileged: true"))
    with pytest.raises(BuildError, match="privileged"):
        build(source, tmp_path / "out")


@pytest.mark.parametrize("permission", ["host-read://etc", "host-write://", "host-write:/var/spool/cron/."])
def test_build_refuses_every_spelling_of_a_denied_host_path(tmp_path: Path, permission: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    text = compose().replace("pids: 64}", f'pids: 64}}\n      permissions: ["{permission}"]')
    (source / "compose.yaml").write_text(text)
    with pytest.raises(BuildError, match="cannot be shared"):
        build(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_export_leaves_no_build(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "compose.yaml").write_text(compose())

    def failing(_image: str, destination: Path) -> None:
        destination.write_bytes(b"half an archive")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build(source, tmp_path / "out", exporter=failing)
    assert not (tmp_path / "out").exists()

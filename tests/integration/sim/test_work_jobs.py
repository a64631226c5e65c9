"""The simulator's worker jobs against an in-process hub: the agent's enrollment, and its verification refusing
forged or damaged bytes, so a simulated device never "installs" what a real one would refuse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgefleet.agent.identity import load_identity
from edgefleet.agent.policy import Policy
from edgefleet.agent.runner import LocalState, save_state
from edgefleet.sim import shared
from edgefleet.sim.shared import share_verification, stop_sharing
from edgefleet.sim.work import EnrollJob, VerifyJob, enroll_with, restore, verify_with
from tests.conftest import Fleet
from tests.publishing import Publisher, Tamper, assign

pytestmark = pytest.mark.integration
MANIFEST_URL = r"/tuf/repository/targets/sensor/1\.0\.0/[0-9a-f]{64}\.compose\.yaml$"
DIRECTOR_TARGETS_URL = r"/tuf/director/\d+\.targets\.json$"


@pytest.fixture
def publisher(fleet: Fleet, tmp_path: Path) -> Publisher:
    publisher = Publisher.create(fleet, tmp_path)
    publisher.publish("sensor", "1.0.0", bundle=True)
    return publisher


def enrolled(fleet: Fleet, tmp_path: Path) -> tuple[str, Path]:
    data_dir = tmp_path / "devices" / "000000"
    job = EnrollJob(data_dir=data_dir, token=fleet.enrollment_token(uses=2), arch="arm64", hostname="sim-000000")
    result = enroll_with(fleet.device_client(), job)
    assert result.failure is None, result.failure
    assert result.fresh
    assert (data_dir / "tuf" / "repository" / "root.json").exists()
    again = enroll_with(fleet.device_client(), job)  # found enrolled: the hub is not asked again
    assert (again.device_id, again.fresh) == (result.device_id, False)
    assert result.device_id is not None
    return result.device_id, data_dir


def job(data_dir: Path) -> VerifyJob:
    return VerifyJob(data_dir=data_dir, arch="arm64", installed={}, failed={}, policy=Policy())


def test_a_release_that_verifies_is_a_candidate_without_its_bundled_images(
    fleet: Fleet, publisher: Publisher, tmp_path: Path
) -> None:
    device_id, data_dir = enrolled(fleet, tmp_path)
    assert assign(fleet, device_id, "sensor@1.0.0").status_code == 200
    verified = verify_with(fleet.device_client(), job(data_dir))
    assert verified.failure is None
    [candidate] = verified.candidates
    assert (candidate.app, candidate.mark, candidate.release.version) == ("sensor", "1-1.0.0", "1.0.0")
    installed = Path(candidate.entry.directory)
    # verified, then the images dropped; the manifest's document kept as the agent keeps it
    assert sorted(p.name for p in installed.iterdir()) == ["compose.json", "compose.yaml"]


def test_a_tampered_manifest_is_refused_and_nothing_is_installed(
    fleet: Fleet, publisher: Publisher, tmp_path: Path
) -> None:
    device_id, data_dir = enrolled(fleet, tmp_path)
    assert assign(fleet, device_id, "sensor@1.0.0").status_code == 200
    identity_client = fleet.device_client()
    tamper = Tamper(
        identity_client.fetcher(load_identity(data_dir)),
        {MANIFEST_URL: lambda d: d.replace(b"unless-stopped", b"always        ")},
    )
    verified = verify_with(identity_client, job(data_dir), fetcher=tamper)
    assert tamper.hits
    assert verified.failure is not None
    assert (verified.failure.kind, verified.failure.reason, verified.failure.retry) == (
        "refused",
        "hash_mismatch",
        True,
    )
    assert verified.candidates == ()
    assert not [p for p in (data_dir / "releases").rglob("*") if p.is_file()]


def test_forged_director_metadata_is_refused(fleet: Fleet, publisher: Publisher, tmp_path: Path) -> None:
    device_id, data_dir = enrolled(fleet, tmp_path)
    assert assign(fleet, device_id, "sensor@1.0.0").status_code == 200

    def forge(raw: bytes) -> bytes:
        data = json.loads(raw)
        data["signed"]["expires"] = "2099-01-01T00:00:00Z"  # any change breaks the director's signature
        return json.dumps(data).encode()

    client = fleet.device_client()
    tamper = Tamper(client.fetcher(load_identity(data_dir)), {DIRECTOR_TARGETS_URL: forge})
    verified = verify_with(client, job(data_dir), fetcher=tamper)
    assert verified.failure is not None
    assert (verified.failure.kind, verified.failure.reason) == ("refused", "signature")
    assert verified.plan is None
    assert not (data_dir / "releases").exists()


def test_what_a_device_installed_is_restored_for_the_next_run(
    fleet: Fleet, publisher: Publisher, tmp_path: Path
) -> None:
    device_id, data_dir = enrolled(fleet, tmp_path)
    assert assign(fleet, device_id, "sensor@1.0.0").status_code == 200
    [candidate] = verify_with(fleet.device_client(), job(data_dir)).candidates
    save_state(data_dir, LocalState(apps={"sensor": candidate.entry}, failed={"other": "1-0.1.0"}))
    restored = restore(data_dir)
    assert restored.apps == {"sensor": candidate.entry}
    assert restored.running == {"sensor": candidate.release}
    assert restored.failed == {"other": "1-0.1.0"}


REPOSITORY_TARGETS_URL = r"/tuf/repository/\d+\.targets\.json$"


def test_devices_of_one_worker_share_verified_repository_metadata_but_not_forged_files(
    fleet: Fleet, publisher: Publisher, tmp_path: Path
) -> None:
    token = fleet.enrollment_token(uses=3)
    devices = []
    for index in range(3):
        data_dir = tmp_path / "devices" / f"{index:06d}"
        enrolled_job = EnrollJob(data_dir=data_dir, token=token, arch="arm64", hostname=f"sim-{index:06d}")
        result = enroll_with(fleet.device_client(), enrolled_job)
        assert result.device_id is not None
        assert assign(fleet, result.device_id, "sensor@1.0.0").status_code == 200
        devices.append(data_dir)
    share_verification()
    try:
        first = shared.shared
        assert verify_with(fleet.device_client(), job(devices[0])).failure is None
        client = fleet.device_client()
        counting = Tamper(client.fetcher(load_identity(devices[1])), {r"/tuf/": lambda raw: raw})  # passes all
        assert verify_with(client, job(devices[1]), fetcher=counting).failure is None
        assert shared.shared > first  # the second device's repository files were checked by the first
        names = [url.split("/tuf/", 1)[1] for url in counting.hits]
        for role in ("timestamp", "snapshot", "targets"):  # each device still fetches every file itself
            assert any(re.fullmatch(rf"repository/(\d+\.)?{role}\.json", name) for name in names), names

        def forge(raw: bytes) -> bytes:
            data = json.loads(raw)
            data["signed"]["expires"] = "2099-01-01T00:00:00Z"  # breaks the publisher's signature
            return json.dumps(data).encode()

        client = fleet.device_client()
        tamper = Tamper(client.fetcher(load_identity(devices[2])), {REPOSITORY_TARGETS_URL: forge})
        verified = verify_with(client, job(devices[2]), fetcher=tamper)
        assert tamper.hits
        assert verified.failure is not None
        assert (verified.failure.kind, verified.failure.reason) == ("refused", "signature")
        assert verified.candidates == ()
    finally:
        stop_sharing()

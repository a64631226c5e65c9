"""Each device's director metadata as stored, on each backend: new versions in, all but the newest few out."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from edgefleet.hub.db.director import DIRECTOR_VERSIONS_KEPT
from tests.conftest import Fleet

pytestmark = pytest.mark.integration


def stored(fleet: Fleet, device_id: str) -> dict[str, list[int]]:
    query = text("SELECT role, version FROM director_metadata WHERE device_id = :d ORDER BY role, version")
    with fleet.hub.store.engine.connect() as conn:
        rows = conn.execute(query, {"d": device_id}).all()
    versions: dict[str, list[int]] = {}
    for role, version in rows:
        versions.setdefault(role, []).append(version)
    return versions


def test_new_versions_replace_all_but_the_newest_few_of_their_roles_only(fleet: Fleet) -> None:
    device, other = fleet.enroll().device_id, fleet.enroll().device_id
    before = stored(fleet, other)
    for version in range(100, 107):
        signed = {role: (version, f'{{"{role}": {version}}}') for role in ("targets", "snapshot", "timestamp")}
        if version % 2:
            del signed["targets"]  # a role not signed anew keeps its versions
        with fleet.hub.store.transaction() as tx:
            tx.insert_directors(device, signed, now=fleet.clock())
    assert DIRECTOR_VERSIONS_KEPT == 4
    assert stored(fleet, device) == {
        "snapshot": [103, 104, 105, 106],
        "targets": [104, 106],  # 102 went with 106 (kept: newer than 106 - 4), 100 with 104
        "timestamp": [103, 104, 105, 106],
    }
    assert stored(fleet, other) == before  # another device's files are its own
    with fleet.hub.store.transaction(readonly=True) as tx:
        newest = tx.latest_directors(device)
    assert newest == {role: (106, f'{{"{role}": 106}}') for role in ("targets", "snapshot", "timestamp")}

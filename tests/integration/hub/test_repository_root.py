"""Root metadata on the hub: first root on trust, later roots chained by signatures; refusals write nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from edgefleet.publisher.keys import init_keys, key_from_wire, load_index, load_signers
from edgefleet.publisher.metadata import make_root

pytestmark = pytest.mark.integration


def online(fleet) -> dict:
    return {role: key_from_wire(data) for role, data in fleet.hub.keys.online_public.items()}


def signed_root(fleet, keys, *, version=1, signers=None, trusted=None, online_keys=None, lifetime=timedelta(days=30)):
    md = make_root(
        load_index(keys), online_keys or online(fleet), now=fleet.clock(), version=version, lifetime=lifetime
    )
    for signer in signers if signers is not None else load_signers(keys, "root"):
        md.sign(signer, append=True)
    return md.to_dict()


def test_first_root_then_a_rotation_signed_by_old_and_new_keys(fleet, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    init_keys(old)
    init_keys(new, threshold=2, count=2)
    first = fleet.call("POST", "/repository/root", json=signed_root(fleet, old))
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1

    only_new = signed_root(fleet, new, version=2)
    refused = fleet.call("POST", "/repository/root", json=only_new)
    assert refused.status_code == 403
    assert refused.json()["code"] == "signature_threshold"

    both = signed_root(fleet, new, version=2, signers=[*load_signers(old, "root"), *load_signers(new, "root")])
    assert fleet.call("POST", "/repository/root", json=both).status_code == 201
    latest = Metadata[Root].from_dict(fleet.call("GET", "/repository/root").json())
    assert latest.signed.version == 2
    assert set(latest.signed.roles["root"].keyids) == {k.keyid for k in load_index(new)["root"].keys}
    v1 = Metadata[Root].from_dict(fleet.call("GET", "/repository/root/1").json())
    v1.signed.verify_delegate(Root.type, v1.signed_bytes, v1.signatures)
    actions = [e["action"] for e in fleet.call("GET", "/audit").json()]
    assert actions.count("repository.root") == 3  # two accepted, one refused


@pytest.mark.parametrize(
    "problem", ["skip-version", "expired", "foreign-online-keys", "unsigned", "garbage", "no-consistent-snapshot"]
)
def test_bad_roots_are_refused_and_nothing_is_stored(fleet, tmp_path, problem):
    keys = tmp_path / "keys"
    init_keys(keys)
    if problem == "skip-version":
        body, status, code = signed_root(fleet, keys, version=2), 409, "wrong_version"
    elif problem == "expired":
        body, status, code = signed_root(fleet, keys, lifetime=timedelta(seconds=-1)), 409, "expired"
    elif problem == "foreign-online-keys":
        stranger = {r: CryptoSigner.generate_ed25519().public_key for r in ("snapshot", "timestamp")}
        body, status, code = signed_root(fleet, keys, online_keys=stranger), 409, "online_keys_mismatch"
    elif problem == "no-consistent-snapshot":
        md = make_root(load_index(keys), online(fleet), now=fleet.clock())
        md.signed.consistent_snapshot = False
        for signer in load_signers(keys, "root"):
            md.sign(signer, append=True)
        body, status, code = md.to_dict(), 409, "consistent_snapshot_required"
    elif problem == "unsigned":
        body, status, code = signed_root(fleet, keys, signers=[]), 403, "signature_threshold"
    else:
        body, status, code = {"signed": {"_type": "root"}, "signatures": []}, 400, "invalid_metadata"
    response = fleet.call("POST", "/repository/root", json=body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert fleet.counts()["repo_metadata"] == 0
    assert fleet.call("GET", "/repository/root").status_code == 404


def test_only_admins_push_roots(fleet, tmp_path):
    keys = tmp_path / "keys"
    init_keys(keys)
    operator = fleet.operator_token("operator")
    response = fleet.call("POST", "/repository/root", operator, json=signed_root(fleet, keys))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_role"
    assert fleet.counts()["repo_metadata"] == 0


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def test_mutated_roots_never_cause_a_server_error(fleet, tmp_path):
    """Any one value of a valid signed root replaced by junk: a 4xx (or 201 if still valid), never a 5xx."""
    import copy

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    keys = tmp_path / "keys"
    init_keys(keys)
    good = signed_root(fleet, keys)
    paths = [p for p in _paths(good) if p]
    junk = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats()
        | st.text(max_size=80)
        | st.just({})
        | st.just([])
        | st.lists(st.text(max_size=5), max_size=3)
    )

    @given(path=st.sampled_from(paths), value=junk)
    @settings(max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def push(path, value):
        body = copy.deepcopy(good)
        node = body
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        try:
            payload = __import__("json").dumps(body, allow_nan=False)
        except ValueError:
            return
        response = fleet.api.post(
            "/api/v1/repository/root",
            content=payload,
            headers={"Authorization": f"Bearer {fleet.admin}", "Content-Type": "application/json"},
        )
        assert response.status_code < 500, (path, value, response.text)
        if response.status_code == 201:
            # Still a valid root (e.g. an unrecognized field changed): start over for the next example.
            with fleet.hub.store.engine.begin() as conn:
                conn.execute(__import__("sqlalchemy").text("DELETE FROM repo_metadata"))

    push()

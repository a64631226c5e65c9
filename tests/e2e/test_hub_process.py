"""End to end: a hub subprocess over real HTTPS, a device enrolling through the agent library, the CLI."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import ssl

import httpx
import pytest

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from edgefleet.agent.errors import DeviceNotAcceptedError, HubUnreachableError
from tests.e2e.conftest import edgefleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_init_writes_private_keys_0600_and_refuses_an_existing_dir(tmp_path):
    data_dir = tmp_path / "hub"
    first = edgefleet("hub", "init", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    assert "admin token: efa_" in first.stdout
    for name in (
        "ca.key",
        "tls.key",
        "audit.key",
        "hub.db",
        "keys/director.key",
        "keys/snapshot.key",
        "keys/timestamp.key",
    ):
        assert (data_dir / name).stat().st_mode & 0o777 == 0o600, name
    assert data_dir.stat().st_mode & 0o777 == 0o700
    before = {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}
    again = edgefleet("hub", "init", "--data-dir", str(data_dir))
    assert again.returncode != 0
    assert "refusing to overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    assert {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()} == before


def test_enroll_over_https_then_list_and_revoke_with_the_cli(running_hub, tmp_path):
    created = running_hub.cli("token", "create", "--fleet", "plant-1", "--tag", "env=prod", "--uses", "2", "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]

    with DeviceClient.connect(running_hub.url, ca=running_hub.ca) as client:
        device = enroll(client, tmp_path / "device", token=token)
        assert device.identity.status == "accepted"
        assert client.whoami(device).device_id == device.device_id

        listed = running_hub.cli("device", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [(r["id"], r["fleet"], r["tags"]) for r in rows] == [(device.device_id, "plant-1", {"env": "prod"})]

        shown = running_hub.cli("device", "show", device.device_id, "--json")
        assert json.loads(shown.stdout)["status"] == "accepted"

        revoked = running_hub.cli("device", "revoke", device.device_id)
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(DeviceNotAcceptedError) as refused:
            client.whoami(device)
        assert refused.value.code == "device_revoked"

    audit = running_hub.cli("audit", "list", "--json")
    actions = [e["action"] for e in json.loads(audit.stdout)]
    assert actions[:3] == ["device.revoke", "device.enroll", "token.create"]
    verified = running_hub.cli("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout
    checkpoint = next(line.split()[1] for line in verified.stdout.splitlines() if line.startswith("checkpoint:"))
    assert running_hub.cli("audit", "verify", "--expect-head", checkpoint).returncode == 0
    seq = checkpoint.split(":")[0]
    wrong = running_hub.cli("audit", "verify", "--expect-head", f"{seq}:{'0' * 64}")
    assert wrong.returncode == 1
    assert "rewritten" in wrong.stderr


def test_device_refuses_a_hub_its_ca_did_not_sign(sqlite_hub, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    other = edgefleet("hub", "init", "--data-dir", str(tmp_path / "other"))
    assert other.returncode == 0
    other_ca.write_bytes((tmp_path / "other" / "ca.crt").read_bytes())
    with DeviceClient.connect(sqlite_hub.url, ca=other_ca) as client, pytest.raises(HubUnreachableError):
        enroll(client, tmp_path / "device", token="efe_0000000000000000_" + "A" * 43)
    assert not (tmp_path / "device" / "identity.json").exists()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_below_1_2_is_refused(sqlite_hub):
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(sqlite_hub.ca))
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with contextlib.suppress(ssl.SSLError):
        old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sqlite_hub.url}/healthz", verify=old, timeout=5)
    modern = ssl.create_default_context(cafile=str(sqlite_hub.ca))
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    assert httpx.get(f"{sqlite_hub.url}/healthz", verify=modern, timeout=5).status_code == 200


def test_health_metrics_and_openapi_are_served(sqlite_hub):
    verify = ssl.create_default_context(cafile=str(sqlite_hub.ca))
    assert httpx.get(f"{sqlite_hub.url}/healthz", verify=verify).json() == {"status": "ok", "database": "sqlite"}
    metrics = httpx.get(f"{sqlite_hub.url}/metrics", verify=verify).text
    assert "edgefleet_http_requests_total" in metrics
    spec = httpx.get(f"{sqlite_hub.url}/openapi.json", verify=verify).json()
    assert "/api/v1/enroll" in spec["paths"]


def test_cli_user_errors_are_one_line_with_exit_codes(sqlite_hub):
    bad_token = sqlite_hub.cli("device", "list", token="efa_0000000000000000_" + "A" * 43)
    assert bad_token.returncode == 3
    assert bad_token.stderr.strip().splitlines() == [
        "error: hub refused: invalid_api_token: unknown API token",
        "hint: the API token is unknown, expired or revoked: check --token or EDGEFLEET_TOKEN",
    ]
    assert "Traceback" not in bad_token.stderr

    no_hub = edgefleet("device", "list", env={"EDGEFLEET_HUB": "", "EDGEFLEET_TOKEN": "x"})
    assert no_hub.returncode == 2
    assert "hint: pass --hub" in no_hub.stderr

    unreachable = edgefleet(
        "device", "list", "--hub", "https://127.0.0.1:1", "--token", "x", "--ca", str(sqlite_hub.ca)
    )
    assert unreachable.returncode == 4
    assert "cannot reach the hub" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr

    bad_tag = sqlite_hub.cli("token", "create", "--fleet", "f1", "--tag", "novalue")
    assert bad_tag.returncode == 2
    assert "key=value" in bad_tag.stderr

    viewer = sqlite_hub.cli("user", "create", "vic", "--role", "viewer")
    assert viewer.returncode == 0
    viewer_token = sqlite_hub.cli("apitoken", "create", "--user", "vic", "--json")
    secret = json.loads(viewer_token.stdout)["token"]
    denied = sqlite_hub.cli("token", "create", "--fleet", "f1", token=secret)
    assert denied.returncode == 3
    assert "insufficient_role" in denied.stderr
    assert "hint: your role does not allow this" in denied.stderr

    unknown = sqlite_hub.cli("device", "show", "00000000-0000-4000-8000-000000000000")
    assert unknown.returncode == 3
    assert "hint: check the name or ID (the group's list command shows them)" in unknown.stderr, unknown.stderr


def test_cli_audit_verify_names_a_tampered_entry(sqlite_hub):
    for fleet_name in ("a", "b", "c"):
        assert sqlite_hub.cli("token", "create", "--fleet", fleet_name).returncode == 0
    with sqlite3.connect(sqlite_hub.data_dir / "hub.db") as db:
        db.execute("UPDATE audit_log SET target = 'fleet:z' WHERE seq = 4")
    result = sqlite_hub.cli("audit", "verify")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: audit log broken at entry 4: entry 4 was altered"


def test_hub_up_initialises_prints_how_to_connect_and_serves(tmp_path):
    """The README's first command ends in `edgefleet hub up`: it must print URL, CA and a working token."""
    import subprocess
    import sys
    import time

    from tests.e2e.conftest import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "edgefleet.cli.main", "hub", "up", "--bind", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        printed: dict[str, str] = {}
        assert process.stdout is not None
        while "hub URL" not in printed:
            line = process.stdout.readline()
            assert line, "hub up exited early"
            key, _, value = line.partition(":")
            printed[key.strip()] = value.strip()
        assert printed["hub URL"] == f"https://localhost:{port}"
        assert printed["CA"] == str(tmp_path / ".edgefleet" / "hub" / "ca.crt")
        env = {
            "EDGEFLEET_HUB": printed["hub URL"],
            "EDGEFLEET_CA": printed["CA"],
            "EDGEFLEET_TOKEN": printed["admin token"],
        }
        deadline = time.monotonic() + 30
        while (result := edgefleet("device", "list", "--json", env=env)).returncode != 0:
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.2)
        assert json.loads(result.stdout) == []
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_init_against_an_unreachable_database_fails_in_one_line_and_leaves_nothing(tmp_path):
    data_dir = tmp_path / "hub"
    result = edgefleet(
        "hub", "init", "--data-dir", str(data_dir), "--database-url", "postgresql://postgres@127.0.0.1:1/none"
    )
    assert result.returncode == 4
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: cannot reach the database")
    assert not data_dir.exists()
    again = edgefleet("hub", "init", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr


def test_publisher_starts_the_image_repository_from_the_cli(sqlite_hub, tmp_path):
    keys = tmp_path / "keys"
    made = edgefleet("keys", "init", "--dir", str(keys), "--threshold", "2", "--keys", "3")
    assert made.returncode == 0, made.stderr
    pushed = sqlite_hub.cli("repo", "init", "--keys", str(keys))
    assert pushed.returncode == 0, pushed.stderr
    assert "root version 1 accepted" in pushed.stdout
    again = sqlite_hub.cli("repo", "init", "--keys", str(keys))
    assert again.returncode == 3
    assert "wrong_version" in again.stderr
    from tuf.api.metadata import Metadata, Root

    verify = ssl.create_default_context(cafile=str(sqlite_hub.ca))
    body = httpx.get(
        f"{sqlite_hub.url}/api/v1/repository/root",
        verify=verify,
        headers={"Authorization": f"Bearer {sqlite_hub.admin_token}"},
    ).json()
    root = Metadata[Root].from_dict(body)
    root.signed.verify_delegate(Root.type, root.signed_bytes, root.signatures)
    assert root.signed.roles["root"].threshold == 2

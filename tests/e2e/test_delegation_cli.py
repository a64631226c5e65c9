"""Team delegations through the CLI against a real hub over HTTPS: delegate, a team publishes, revoke.

The targets holders and the sensor team each have a key directory; the team hands over only
its keys.json. A device (the agent's library) and `edgefleet-tuf-client` (a stock-protocol TUF
client) find the team's release through the delegation the hub serves.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path

import httpx

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from edgefleet.agent.truststore import TrustStore
from edgefleet.agent.verify import ReleaseVerifier
from tests.e2e.conftest import RunningHub, edgefleet
from tests.e2e.test_releases_e2e import TUF_CLIENT, ok
from tests.publishing import compose


def app_dir(tmp_path: Path, app: str, version: str) -> Path:
    directory = tmp_path / f"app-{app}-{version}"
    directory.mkdir()
    (directory / "compose.yaml").write_text(compose(app, version))
    return directory


def refused(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[0].startswith("error: ")


def test_delegate_publish_as_a_team_and_revoke(public_hub: RunningHub, tmp_path: Path) -> None:
    hub, keys, team = public_hub, tmp_path / "keys", tmp_path / "team"
    ok(edgefleet("keys", "init", "--dir", str(keys)))
    ok(hub.cli("repo", "init", "--keys", str(keys)))
    ok(hub.cli("release", "publish", str(app_dir(tmp_path, "sensor", "1.0.0")), "--keys", str(keys)))

    made = json.loads(ok(edgefleet("keys", "init", "--dir", str(team), "--delegated", "sensor-team", "--json")))
    assert list(made) == ["sensor-team"]
    told = ok(edgefleet("keys", "init", "--dir", str(tmp_path / "team2"), "--delegated", "gateway-team"))
    assert "edgefleet keys delegate gateway-team --team-keys keys.json" in told
    handed_over = tmp_path / "sensor-team.keys.json"  # only the public file leaves the team
    handed_over.write_bytes((team / "keys.json").read_bytes())

    refused(
        hub.cli("keys", "delegate", "other-team", "--dir", str(keys), "--team-keys", str(handed_over), "--app", "x"),
        2,
        "holds the keys of sensor-team, not of other-team",
    )
    delegated = hub.cli(
        "keys", "delegate", "sensor-team", "--dir", str(keys), "--team-keys", str(handed_over), "--app", "sensor"
    )
    assert "targets version 2 delegates sensor to sensor-team (threshold 1 of 1 keys)" in ok(delegated)
    listed = json.loads(ok(edgefleet("keys", "delegations", "--dir", str(keys), "--json")))
    assert listed == [
        {
            "role": "sensor-team",
            "paths": ["sensor/*/*", "sensor/*/images/*"],
            "threshold": 1,
            "keyids": made["sensor-team"]["keyids"],
        }
    ]
    assert "sensor/*/* sensor/*/images/*" in ok(edgefleet("keys", "delegations", "--dir", str(keys)))

    # The team publishes its app; its counter carries on above the holders' last sensor release.
    published = hub.cli("release", "publish", str(app_dir(tmp_path, "sensor", "1.1.0")), "--keys", str(team))
    assert "published sensor@1.1.0 in sensor-team version 1" in ok(published)
    # The holders no longer sign sensor; the team cannot sign another app.
    refused(
        hub.cli("release", "publish", str(app_dir(tmp_path, "sensor", "1.2.0")), "--keys", str(keys)),
        2,
        "sensor is delegated to the role sensor-team",
    )
    build = tmp_path / "build-other"
    ok(edgefleet("release", "build", str(app_dir(tmp_path, "other", "1.0.0")), "--out", str(build)))
    signed = ok(edgefleet("release", "sign", str(build), "--keys", str(team)))
    assert f"signed sensor-team version 2 into {build / 'delegated' / 'sensor-team.json'}" in signed
    refused(hub.cli("release", "push", str(build)), 3, "path_not_delegated")

    rows = json.loads(ok(hub.cli("release", "list", "--json")))
    assert [(r["app"], r["version"], r["release_counter"], r["role"], r["current"]) for r in rows] == [
        ("sensor", "1.1.0", 2, "sensor-team", True),
        ("sensor", "1.0.0", 1, "targets", True),
    ]
    table = ok(edgefleet("release", "list", env={**hub.env(), "COLUMNS": "200"}))
    assert "sensor-team: " in table
    assert "current" in table

    # A device installs the team's release; a stock-protocol TUF client finds it too.
    token = json.loads(ok(hub.cli("token", "create", "--fleet", "lab", "--json")))["token"]
    client = DeviceClient.connect(hub.url, ca=hub.ca)
    identity = enroll(client, tmp_path / "device", token=token, arch="arm64")
    trust = TrustStore(tmp_path / "device" / "tuf")
    trust.bootstrap(repository_root=client.tuf_roots(identity)[0], director_root=client.tuf_roots(identity)[1])
    ok(hub.cli("device", "assign", identity.device_id, "sensor@1.1.0"))
    verifier = ReleaseVerifier(
        hub_url=hub.url, trust=trust, fetcher=client.fetcher(identity), device_id=identity.device_id, arch="arm64"
    )
    release = verifier.verify("sensor", installed_counter=1, install_dir=tmp_path / "device" / "apps" / "a")
    assert (release.version, release.release_counter) == ("1.1.0", 2)
    client.close()

    base = f"{hub.url}/api/v1/tuf/repository"
    trusted = tmp_path / "root.json"
    trusted.write_bytes(httpx.get(f"{base}/1.root.json", verify=ssl.create_default_context(cafile=str(hub.ca))).content)
    meta, targets = tmp_path / "tuf-meta", tmp_path / "tuf-targets"
    tuf = [TUF_CLIENT, "--metadata-dir", str(meta), "--ca", str(hub.ca), "--metadata-url", base]
    assert subprocess.run([*tuf[:3], "init", str(trusted)], check=False, timeout=60).returncode == 0
    fetch = [*tuf, "--target-name", "sensor/1.1.0/compose.yaml", "--target-base-url", f"{base}/targets"]
    done = subprocess.run(
        [*fetch, "--target-dir", str(targets), "download"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (meta / "sensor-team.json").exists()

    # Revocation is one command: the team's releases stop being targets, its pushes are refused.
    revoked = hub.cli("keys", "revoke-delegation", "sensor-team", "--dir", str(keys))
    assert "targets version 3 no longer delegates to sensor-team" in ok(revoked)
    assert json.loads(ok(edgefleet("keys", "delegations", "--dir", str(keys), "--json"))) == []
    rows = json.loads(ok(hub.cli("release", "list", "--json")))
    assert {(r["version"], r["current"]) for r in rows} == {("1.1.0", False), ("1.0.0", True)}
    assert "withdrawn" in ok(edgefleet("release", "list", env={**hub.env(), "COLUMNS": "200"}))
    refused(hub.cli("device", "assign", identity.device_id, "sensor@1.1.0"), 3, "release_withdrawn")
    record = (team / "repository" / "sensor-team.json").read_bytes()
    refused(
        hub.cli("release", "publish", str(app_dir(tmp_path, "sensor", "1.3.0")), "--keys", str(team)),
        3,
        "not_delegated",
    )
    assert (team / "repository" / "sensor-team.json").read_bytes() == record  # the refused signing is undone
    refused(
        hub.cli("keys", "revoke-delegation", "sensor-team", "--dir", str(keys)), 2, "do not delegate to sensor-team"
    )
    # The holders take the app back, above every counter the team used.
    taken_back = hub.cli("release", "publish", str(app_dir(tmp_path, "sensor", "1.4.0")), "--keys", str(keys))
    assert "published sensor@1.4.0 in targets version 4" in ok(taken_back)
    rows = json.loads(ok(hub.cli("release", "list", "--json", "--app", "sensor")))
    assert rows[0]["version"] == "1.4.0"
    assert rows[0]["release_counter"] == 3

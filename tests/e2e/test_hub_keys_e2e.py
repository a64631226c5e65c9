"""The documented key-rotation procedure with the real CLI against a real hub process, a device verifying throughout.

`edgefleet hub keys rotate` on the running hub's data dir, a restart of `hub serve`, then
`edgefleet repo rotate-online-keys` by the publisher: the device (the agent's verification
library over HTTPS) updates between and after, and ends up trusting only the new keys.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from edgefleet.agent.verify import ReleaseVerifier, TrustStore
from tests.e2e.conftest import RunningHub, edgefleet
from tests.e2e.test_releases_e2e import ok, publish_first_release, write_app


def test_the_rotation_procedure_end_to_end(sqlite_hub: RunningHub, tmp_path: Path) -> None:
    hub = sqlite_hub
    keys = publish_first_release(hub, tmp_path)
    token = json.loads(ok(hub.cli("token", "create", "--fleet", "lab", "--json")))["token"]
    client = DeviceClient.connect(hub.url, ca=hub.ca)
    identity = enroll(client, tmp_path / "device", token=token, arch="arm64")
    trust = TrustStore(tmp_path / "device" / "tuf")
    repository_root, director_root = client.tuf_roots(identity)
    trust.bootstrap(repository_root=repository_root, director_root=director_root)
    installed: list[str] = []

    def release(version: str) -> None:
        if version != "1.0.0":
            ok(hub.cli("release", "publish", str(write_app(tmp_path, version)), "--keys", str(keys)))
        ok(hub.cli("device", "assign", identity.device_id, f"sensor@{version}"))
        verifier = ReleaseVerifier(
            hub_url=hub.url, trust=trust, fetcher=client.fetcher(identity), device_id=identity.device_id, arch="arm64"
        )
        done = verifier.verify(
            "sensor", installed_counter=len(installed) or None, install_dir=tmp_path / "device" / "apps" / version
        )
        assert done.version == version
        installed.append(version)

    def trusted(repo: str, role: str) -> Metadata[Any]:
        return Metadata.from_bytes((trust.metadata_dir(repo) / f"{role}.json").read_bytes())

    release("1.0.0")
    online = json.loads(ok(hub.cli("repo", "rotate-online-keys", "--keys", str(keys), "--json")))
    assert online["outcome"] == "unchanged"  # nothing rotated yet: nothing to push
    old = {role: trusted("repository", "root").signed.roles[role].keyids[0] for role in ("snapshot", "timestamp")}

    # The hub operator rotates every online key while the hub serves; it still signs with the old ones.
    rotated = edgefleet("hub", "keys", "rotate", "--data-dir", str(hub.data_dir), "--all")
    assert rotated.returncode == 0, rotated.stderr
    new = {line.split()[0].rstrip(":"): line.split()[3] for line in rotated.stdout.splitlines()}
    assert set(new) == {"director", "snapshot", "timestamp"}
    assert "restart every hub process" in rotated.stderr

    hub.restart()
    release("1.1.0")  # the director root is rotated by the hub; snapshot and timestamp: the old keys
    assert trusted("director", "root").signed.roles["root"].keyids == [new["director"]]
    assert set(trusted("repository", "timestamp").signatures) == {old["timestamp"]}

    # Before the publisher's part the hub refuses any root that does not name its new keys.
    refused = hub.cli("keys", "rotate", "--dir", str(keys), "--role", "targets")
    assert refused.returncode != 0, refused.stderr
    assert "online_keys_mismatch" in refused.stderr

    named = hub.cli("repo", "rotate-online-keys", "--keys", str(keys))
    assert named.returncode == 0, named.stderr
    assert named.stdout.split()[:3] == ["root", "version", "2"]
    assert new["snapshot"] in named.stdout
    assert new["timestamp"] in named.stdout
    assert "nothing to do" in ok(hub.cli("repo", "rotate-online-keys", "--keys", str(keys)))
    release("1.2.0")
    assert trusted("repository", "root").signed.version == 2
    assert set(trusted("repository", "timestamp").signatures) == {new["timestamp"]}
    assert set(trusted("repository", "snapshot").signatures) == {new["snapshot"]}
    assert set(trusted("director", "timestamp").signatures) == {new["director"]}

    # Both roots name the new keys: the retired ones can go, and the hub starts without them.
    shutil.rmtree(hub.data_dir / "keys" / "retired")
    hub.restart()

    # A retired key that a root still names cannot go: `hub serve` says which, in one line.
    again = edgefleet("hub", "keys", "rotate", "--data-dir", str(hub.data_dir), "--role", "timestamp")
    assert again.returncode == 0, again.stderr
    shutil.rmtree(hub.data_dir / "keys" / "retired")
    hub.stop()
    serve = edgefleet("hub", "serve", "--data-dir", str(hub.data_dir), "--bind", "127.0.0.1:9")
    assert serve.returncode == 4
    assert serve.stderr.startswith(f"error: the image repository's root names timestamp key {new['timestamp']}")
    assert len(serve.stderr.strip().splitlines()) == 1
    client.close()

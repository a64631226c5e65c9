"""Signed releases against a real hub over HTTPS: the CLI as a publisher, the agent library as a device,
stock python-tuf as an outside client, and `edgefleet-tuf-client` speaking the conformance protocol."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.enroll import enroll
from edgefleet.agent.verify import ReleaseVerifier, TrustStore, VerifiedRelease
from tests.e2e.conftest import RunningHub, edgefleet
from tests.publishing import compose

TUF_CLIENT = str(Path(sys.executable).parent / "edgefleet-tuf-client")


def write_app(tmp_path: Path, version: str) -> Path:
    app = tmp_path / f"app-{version}"
    app.mkdir()
    (app / "compose.yaml").write_text(compose("sensor", version))
    return app


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def publish_first_release(hub: RunningHub, tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    ok(edgefleet("keys", "init", "--dir", str(keys)))
    ok(hub.cli("repo", "init", "--keys", str(keys)))
    build = tmp_path / "build-1.0.0"
    ok(edgefleet("release", "build", str(write_app(tmp_path, "1.0.0")), "--out", str(build)))
    ok(edgefleet("release", "sign", str(build), "--keys", str(keys)))
    pushed = hub.cli("release", "push", str(build))
    assert "sensor@1.0.0" in ok(pushed)
    assert pushed.stderr == ""  # no progress bar when the output is not a terminal
    return keys


def test_publish_assign_verify_and_rotate_over_https(sqlite_hub: RunningHub, tmp_path: Path) -> None:
    hub = sqlite_hub
    keys = publish_first_release(hub, tmp_path)
    listed = json.loads(ok(hub.cli("release", "list", "--json")))
    assert [(r["app"], r["version"], r["release_counter"]) for r in listed] == [("sensor", "1.0.0", 1)]

    token = json.loads(ok(hub.cli("token", "create", "--fleet", "lab", "--json")))["token"]
    client = DeviceClient.connect(hub.url, ca=hub.ca)
    identity = enroll(client, tmp_path / "device", token=token, arch="arm64")
    trust = TrustStore(tmp_path / "device" / "tuf")
    repository_root, director_root = client.tuf_roots(identity)
    trust.bootstrap(repository_root=repository_root, director_root=director_root)
    ok(hub.cli("device", "assign", identity.device_id, "sensor@1.0.0"))

    def update(installed: int | None, name: str) -> VerifiedRelease:
        verifier = ReleaseVerifier(
            hub_url=hub.url, trust=trust, fetcher=client.fetcher(identity), device_id=identity.device_id, arch="arm64"
        )
        return verifier.verify("sensor", installed_counter=installed, install_dir=tmp_path / "device" / "apps" / name)

    first = update(None, "a")
    assert first.version == "1.0.0"

    ok(hub.cli("keys", "rotate", "--dir", str(keys), "--role", "root", "--threshold", "2", "--keys", "2"))
    ok(hub.cli("keys", "rotate", "--dir", str(keys), "--role", "targets"))
    ok(hub.cli("release", "publish", str(write_app(tmp_path, "1.1.0")), "--keys", str(keys)))
    ok(hub.cli("device", "assign", identity.device_id, "sensor@1.1.0"))
    second = update(1, "b")
    assert second.version == "1.1.0"

    refused = hub.cli("device", "assign", identity.device_id, "sensor@1.0.0")
    assert refused.returncode == 3
    assert "rollback_required" in refused.stderr
    assert "(rollback)" in ok(hub.cli("device", "assign", identity.device_id, "sensor@1.0.0", "--rollback"))
    client.close()


def test_stock_python_tuf_client_downloads_a_release(public_hub: RunningHub, tmp_path: Path) -> None:
    publish_first_release(public_hub, tmp_path)
    base = f"{public_hub.url}/api/v1/tuf/repository"
    root = httpx.get(f"{base}/1.root.json", verify=ssl.create_default_context(cafile=str(public_hub.ca))).content
    (tmp_path / "root.json").write_bytes(root)
    script = textwrap.dedent(
        """
        import sys
        from tuf.ngclient import Updater

        metadata_dir, base, root, target_dir = sys.argv[1:]
        updater = Updater(
            metadata_dir, base + "/", target_dir, base + "/targets/", bootstrap=open(root, "rb").read()
        )
        updater.refresh()
        info = updater.get_targetinfo("sensor/1.0.0/compose.yaml")
        print(updater.download_target(info))
        """
    )
    (tmp_path / "meta").mkdir()
    (tmp_path / "out").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            script,
            str(tmp_path / "meta"),
            base,
            str(tmp_path / "root.json"),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "SSL_CERT_FILE": str(public_hub.ca)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    downloaded = Path(result.stdout.strip())
    assert b"app: sensor" in downloaded.read_bytes()
    assert (tmp_path / "build-1.0.0" / "compose.yaml").read_bytes() == downloaded.read_bytes()


def target_fetches(hub: RunningHub) -> float:
    metrics = httpx.get(f"{hub.url}/metrics", verify=ssl.create_default_context(cafile=str(hub.ca))).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("edgefleet_http_requests_total") and "targets/{path:path}" in line
    )


def test_edgefleet_tuf_client_speaks_the_conformance_protocol(public_hub: RunningHub, tmp_path: Path) -> None:
    publish_first_release(public_hub, tmp_path)
    base = f"{public_hub.url}/api/v1/tuf/repository"
    verify = ssl.create_default_context(cafile=str(public_hub.ca))
    (tmp_path / "trusted.json").write_bytes(httpx.get(f"{base}/1.root.json", verify=verify).content)
    meta, targets = tmp_path / "metadata", tmp_path / "targets"
    common = ["--metadata-dir", str(meta), "--ca", str(public_hub.ca)]

    def client(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TUF_CLIENT, *args], capture_output=True, text=True, timeout=60, check=False)

    ok(client("--metadata-dir", str(meta), "init", str(tmp_path / "trusted.json")))
    ok(client(*common, "--metadata-url", base, "refresh"))
    assert sorted(p.name for p in meta.glob("*.json")) == [
        "root.json",
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ]

    def download_args(name: str) -> list[str]:
        where = ["--target-base-url", f"{base}/targets", "--target-dir", str(targets)]
        return [*common, "--metadata-url", base, "--target-name", name, *where, "download"]

    download = download_args("sensor/1.0.0/compose.yaml")
    ok(client(*download))
    files = list(targets.iterdir())
    assert len(files) == 1
    assert b"app: sensor" in files[0].read_bytes()
    fetched = target_fetches(public_hub)
    ok(client(*download))  # already there with matching hashes: not fetched again
    assert target_fetches(public_hub) == fetched

    missing = client(*download_args("sensor/9.9.9/compose.yaml"))
    assert missing.returncode == 1
    assert "not a target" in missing.stderr
    other_root = tmp_path / "other"
    (other_root / "meta").mkdir(parents=True)
    forged = json.loads((tmp_path / "trusted.json").read_text())
    forged["signatures"] = []
    (other_root / "root.json").write_text(json.dumps(forged))
    ok(client("--metadata-dir", str(other_root / "meta"), "init", str(other_root / "root.json")))
    bad = client(
        "--metadata-dir", str(other_root / "meta"), "--ca", str(public_hub.ca), "--metadata-url", base, "refresh"
    )
    assert bad.returncode == 1
    assert "refresh failed" in bad.stderr


@pytest.mark.parametrize(
    "args", [["refresh"], ["--metadata-url", "https://127.0.0.1:9/x", "refresh"], ["--bogus", "refresh"], ["sync"]]
)
def test_edgefleet_tuf_client_fails_with_exit_1(tmp_path: Path, args: list[str]) -> None:
    result = subprocess.run(
        [TUF_CLIENT, "--metadata-dir", str(tmp_path / "none"), *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1


def test_a_publish_whose_push_is_refused_leaves_the_keys_as_they_were_and_can_be_run_again(
    sqlite_hub: RunningHub, tmp_path: Path
) -> None:
    hub = sqlite_hub
    keys = publish_first_release(hub, tmp_path)
    recorded = keys / "repository" / "targets.json"
    before = recorded.read_bytes()
    ok(hub.cli("user", "create", "vic", "--role", "viewer"))
    viewer = json.loads(ok(hub.cli("apitoken", "create", "--user", "vic", "--json")))["token"]
    app = write_app(tmp_path, "1.1.0")

    refused = hub.cli("release", "publish", str(app), "--keys", str(keys), token=viewer)
    assert refused.returncode == 3, refused.stderr
    assert "insufficient_role" in refused.stderr
    assert recorded.read_bytes() == before  # not "already signed" next time, and no version the hub lacks

    assert "published sensor@1.1.0" in ok(hub.cli("release", "publish", str(app), "--keys", str(keys)))
    assert "published sensor@1.2.0" in ok(
        hub.cli("release", "publish", str(write_app(tmp_path, "1.2.0")), "--keys", str(keys))
    )

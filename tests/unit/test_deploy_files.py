"""The files in deploy/ (the agent's systemd unit, hub replicas on Compose and Kubernetes) match the code."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_agent_unit_runs_the_installed_agent_command() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive in systemd
    unit.read(ROOT / "deploy" / "systemd" / "edgefleet-agent.service")
    command = shlex.split(unit["Service"]["ExecStart"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

    assert Path(command[0]).name in scripts
    assert unit["Service"]["Restart"] == "always"
    assert unit["Service"]["NoNewPrivileges"] == "true"
    # The installed command accepts exactly these arguments (parsing only: --help exits before running).
    module, _, function = scripts[Path(command[0]).name].partition(":")
    probe = f"import sys; sys.argv = ['x', *{command[1:]!r}, '--help']; import {module} as m; m.{function}()"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr


# --- hub replicas: Compose with HAProxy, Kubernetes ----------------------------------------------

COMPOSE = ROOT / "deploy" / "compose"
KUBERNETES = ROOT / "deploy" / "kubernetes" / "hub.yaml"
DATA_DIR = "/var/lib/edgefleet-hub"
ARTIFACTS = "/var/lib/edgefleet-artifacts"


def accepted_by_the_cli(args: list[str]) -> None:
    """`edgefleet ARGS --help` parses (the flags exist and take what is given)."""
    probe = f"import sys; sys.argv = ['edgefleet', *{args!r}, '--help']; from edgefleet.cli.main import main; main()"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr


def hub_init_files(tmp_path: Path) -> set[str]:
    """What `hub init` writes into a data dir (on PostgreSQL there is no hub.db)."""
    data_dir = tmp_path / "hub"
    done = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli.main", "hub", "init", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return {str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file()} - {"hub.db"}


def test_the_compose_replicas_share_only_what_they_must_behind_haproxy() -> None:
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    hubs = {name: service for name, service in compose["services"].items() if name.startswith("hub-")}
    assert len(hubs) >= 2
    for service in hubs.values():
        accepted_by_the_cli(service["command"])
        assert service["command"][service["command"].index("--data-dir") + 1] == DATA_DIR
        assert f"./hub-data:{DATA_DIR}:ro" in service["volumes"]  # the keys: one copy, read-only
        assert f"artifacts:{ARTIFACTS}" in service["volumes"]  # a named volume, not a replica's disk
        assert service["environment"]["EDGEFLEET_ARTIFACTS_DIR"] == ARTIFACTS
        assert service["environment"]["EDGEFLEET_DATABASE_URL"].startswith("postgresql://")
    assert {"postgres", "registry", "haproxy"} <= set(compose["services"])
    config = (COMPOSE / "haproxy.cfg").read_text()
    servers = {line.split()[1]: line.split()[2] for line in config.splitlines() if line.strip().startswith("server ")}
    assert servers == {name: f"{name}:8443" for name in hubs}
    # The image gets the package only: the build context is the repository, hub-data and all.
    copied = [
        line.split()[1:-1] for line in (COMPOSE / "Dockerfile").read_text().splitlines() if line.startswith("COPY")
    ]
    assert sorted(source for sources in copied for source in sources) == [
        "README.md",
        "constraints.txt",
        "pyproject.toml",
        "src",
    ]


def test_haproxy_accepts_the_shipped_configuration() -> None:
    checked = subprocess.run(
        ["/usr/sbin/haproxy", "-c", "-f", str(COMPOSE / "haproxy.cfg")], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_kubernetes_replicas_mount_every_file_of_the_data_dir(tmp_path: Path) -> None:
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(KUBERNETES.read_text())}
    deployment = documents["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    accepted_by_the_cli(container["args"])
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    secret = volumes[mounts[DATA_DIR]["name"]]["secret"]
    assert mounts[DATA_DIR]["readOnly"] is True
    assert secret["defaultMode"] == 0o400  # the hub refuses private files others can read
    assert {item["path"] for item in secret["items"]} == hub_init_files(tmp_path)
    assert "persistentVolumeClaim" in volumes[mounts[ARTIFACTS]["name"]]
    assert documents["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["EDGEFLEET_ARTIFACTS_DIR"]["value"] == ARTIFACTS
    assert env["EDGEFLEET_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "edgefleet-database"
    assert documents["Service"]["spec"]["ports"][0]["protocol"] == "TCP"

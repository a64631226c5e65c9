"""`edgefleet demo` end to end: the scenario on real Podman and Docker, its end state checked, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edgefleet.demo.engines import ENGINE_NAMES
from edgefleet.demo.scenario import MARKER, Result, manifest
from edgefleet.manifest import parse_manifest
from tests.e2e.conftest import Terminal

pytestmark = [pytest.mark.xdist_group("podman"), pytest.mark.slow, pytest.mark.timeout(900)]
DEMO = [sys.executable, "-m", "edgefleet.cli.main", "demo"]


def left_behind(data_dir: Path, engine: str = "podman") -> list[str]:
    """The demo's processes still running (its own dockerd among them), and what its agents made still on Podman.

    A demo on Docker runs a dockerd of its own: once that has stopped and its data root is gone,
    nothing the agents made is left.
    """
    # This run's engine namespaces (another demo may run beside it, under names of its own).
    namespaces = [tomllib.loads(p.read_text())["engine_namespace"] for p in sorted(data_dir.glob("demo*.toml"))]
    assert len(namespaces) == 3
    mine = tuple(f"edgefleet-{namespace}_" for namespace in namespaces)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(data_dir) in cmdline and int(pid) != os.getpid():
            found.append(cmdline[:200])
    if engine == "docker":
        return found + [str(path) for path in data_dir.glob("docker*")]
    for kind in ("ps -a", "network ls", "volume ls"):
        listed = subprocess.run(["podman", *kind.split(), "--format", "{{.Names}}" if kind == "ps -a" else "{{.Name}}"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        found += [name for name in listed.split() if name.startswith(mine)]
    return found


@pytest.mark.parametrize("engine", [pytest.param(e, marks=pytest.mark.xdist_group(e)) for e in ENGINE_NAMES])
def test_demo_ci_runs_the_whole_scenario_and_leaves_nothing_running(tmp_path: Path, engine: str) -> None:
    data_dir = tmp_path / "demo"
    argv = [*DEMO, "--ci", "--engine", engine, "--data-dir", str(data_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "3 devices enrolled and accepted (3 real agents)" in out
    assert "hello-1: completed" in out
    assert "hello-2: paused: wave 1: 1 of 1 devices failed (threshold 0%)" in out
    assert out.count("runs hello@1.0.0;") == 3  # release 1 on every real agent, the canary's rollback included
    assert out.count("last update: failed 1.0.0->1.1.0") == 1
    assert "release 1.0.0 runs on every agent" in done.stderr
    assert "efa_" not in out  # the admin token is shown only in interactive mode
    assert f"a real agent on {'Podman' if engine == 'podman' else 'Docker'}" in out
    assert left_behind(data_dir, engine) == []


SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def test_demo_on_a_terminal_with_simulated_devices_shows_it_live_keeps_running_then_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    """The README's first command as a person sees it: live view, summary, a working token, Ctrl-C."""
    data_dir = tmp_path / "demo"
    terminal = Terminal([*DEMO, "--simulated", "6", "--data-dir", str(data_dir)])
    try:
        reached = terminal.read_until("press Ctrl-C", timeout=600)
        text = terminal.text()
        assert reached, text[-3000:]
        assert "✓ Hub  " in text  # a finished step of the checklist, with its time
        assert "    $ edgefleet hub init --data-dir DIR/hub" in text
        assert any(frame in text for frame in SPINNER)  # the running step's spinner
        assert "9 devices enrolled and accepted (3 real agents)" in text
        assert "rollout hello-1" in text
        assert "wave 3 of 3" in text  # 1, 34 %, 100 % of nine devices
        assert re.search(r"wave 1 ━{30} 1/1 updated  0 failed", text)  # the canary wave's bar, full
        assert "real agents" in text
        assert re.search(r"demo\d  runs hello@1\.0\.0 ", text)  # an agent's state during a rollout
        assert "✓ Rollout of hello@1.1.0" in text
        assert "hello-2: paused, wave 1 of 2: wave 1: 0/1 updated, 1 failed" in text
        summary = text[text.rindex("Dashboard: ") :]
        assert re.search(r"^Admin token: efa_\S+$", summary, re.MULTILINE), summary
        assert not any(frame in summary for frame in SPINNER)  # the live view stopped before the summary

        exported = next(line for line in summary.splitlines() if line.startswith("  export "))  # the tour's paste
        env = dict(word.split("=", 1) for word in shlex.split(exported)[1:])
        assert env["EDGEFLEET_CA"] == str((data_dir / "hub/ca.crt").resolve())
        listed = subprocess.run(
            [sys.executable, "-m", "edgefleet.cli.main", "device", "list", "--json"],
            capture_output=True, text=True, check=True, env={**os.environ, **env},
        )  # fmt: skip
        assert len(json.loads(listed.stdout)) == 9  # the hub keeps running, and the printed token works

        terminal.process.send_signal(signal.SIGINT)
        assert terminal.read_until(None, timeout=180), terminal.text()[-3000:]  # the demo exits, closing the terminal
        assert terminal.process.wait(timeout=30) == 0, terminal.text()[-3000:]
        assert "Stopping ..." in terminal.text()
    finally:
        terminal.close()
    assert left_behind(data_dir) == []


def test_a_data_dir_that_is_not_a_demos_is_refused_and_left_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "precious"
    data_dir.mkdir()
    (data_dir / "keep.txt").write_text("mine")
    done = subprocess.run([*DEMO, "--ci", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "is not empty and not a demo's data dir" in done.stderr
    assert [p.name for p in data_dir.iterdir()] == ["keep.txt"]
    assert MARKER == ".edgefleet-demo"


def test_the_sample_releases_are_valid_and_only_the_second_lacks_its_health_endpoint() -> None:
    image = "127.0.0.1:5000/edgefleet-demo/busybox@sha256:" + "a" * 64
    good, bad = (
        parse_manifest(manifest("1.0.0", image, healthy=True)),
        parse_manifest(manifest("1.1.0", image, healthy=False)),
    )
    assert (good.version, bad.version) == ("1.0.0", "1.1.0")
    assert "healthz" in manifest("1.0.0", image, healthy=True).split("probes")[0]
    assert "healthz" not in manifest("1.1.0", image, healthy=False).split("probes")[0]


def test_the_end_state_check_names_what_went_wrong() -> None:
    fine = Result(
        agents={"demo1": "a", "demo2": "b"},
        running={"demo1": ["1.0.0"], "demo2": ["1.0.0"]},
        outcomes={"demo1": "committed nothing->1.0.0", "demo2": "failed 1.0.0->1.1.0"},
        first="completed",
        second="paused",
        audit="ok: 40 entries",
    )
    assert fine.problems() == []
    broken = Result(
        agents=fine.agents,
        running={"demo1": ["1.1.0"], "demo2": []},
        outcomes={"demo1": "committed 1.0.0->1.1.0"},
        first="completed",
        second="completed",
        audit="tampered",
    )
    assert broken.problems() == [
        "demo1 runs ['1.1.0'], not hello@1.0.0",
        "demo2 runs nothing, not hello@1.0.0",
        "demo1: 1.1.0 ended 'committed 1.0.0->1.1.0', not rolled back",
        "the second rollout is completed, not paused",
        "audit verify: tampered",
    ]

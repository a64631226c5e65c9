"""The systemd unit in deploy/ starts the agent command that the package installs, with flags it accepts."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

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

"""The agent's own process (cli.agentd): what `edgefleet agent run` hands it arrives intact; the rest is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgefleet.cli import agentd
from edgefleet.cli.exits import EXIT_USAGE


def test_the_hand_over_passes_the_config_and_the_flags_and_nothing_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('hub_url = "https://hub.example:8443"\nenrollment_token = "secret-from-the-file"\n')
    argv = agentd.command(config, {"engine": "unix:///run/podman/podman.sock"}, once=True)
    assert argv[:4] == [sys.executable, "-P", "-m", "edgefleet.cli.agentd"]  # -P: not the working directory
    assert not [part for part in argv if "secret-from-the-file" in part]
    settings = agentd.settings_of(agentd.parser().parse_args(argv[4:]))
    assert (settings.hub_url, settings.engine) == ("https://hub.example:8443", "unix:///run/podman/podman.sock")
    assert settings.enrollment_token == "secret-from-the-file"
    assert agentd.parser().parse_args(argv[4:]).once


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--flags", "not json"], "error: --flags: not JSON"),
        (["--flags", "[]"], "error: --flags: not a JSON object"),
        (["--flags", '{"hub_url": "ftp://x"}'], "hub_url"),
        (["--flags", '{"colour": "blue"}'], "colour"),
        (["--config", "/nonexistent/agent.toml"], "error:"),
    ],
)
def test_a_malformed_hand_over_is_one_line_and_a_usage_error(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert agentd.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert says in err
    assert err.startswith("error:")
    assert "Traceback" not in err

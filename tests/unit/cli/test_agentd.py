"""The agent's own process (cli.agentd): what `edgefleet agent run` hands it arrives intact; the rest is refused."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import pytest

from edgefleet import crypto
from edgefleet.agent.client import DeviceClient
from edgefleet.agent.config import load_settings
from edgefleet.agent.identity import LocalIdentity
from edgefleet.agent.runner import Agent
from edgefleet.cli import agentd
from edgefleet.cli.exits import EXIT_USAGE
from edgefleet.protocol import DeviceIdentity


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


def test_the_configured_bounds_reach_every_part_of_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`[bounds]` from the file is what the agent, its engine, journal, outbox and hub client are given."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'hub_url = "https://hub.example:8443"\ndata_dir = "{tmp_path / "data"}"\npolicy = "{tmp_path / "none.toml"}"\n'
        "trust_first_root = true\n[bounds]\nphase_timeout = 3600\noutbox_events = 7\nresponse_bytes = 131072\n"
    )
    settings = load_settings(config, {})
    device = DeviceIdentity(
        device_id="00000000-0000-4000-8000-000000000001", status="accepted", fleet="lab", ca_bundle="-"
    )
    identity = LocalIdentity(key=crypto.generate_key(), identity=device)
    monkeypatch.setattr(agentd, "check_engine", lambda _url: None)
    monkeypatch.setattr(agentd, "enroll", lambda *_a, **_k: identity)
    monkeypatch.setattr(
        agentd, "establish", lambda *_a, bounds, **_k: "first-use" if bounds is settings.bounds else "?"
    )
    monkeypatch.setattr(Agent, "recover", lambda _self: None)
    connected: list[Any] = []
    monkeypatch.setattr(DeviceClient, "connect", classmethod(lambda _cls, *_a, **k: connected.append(k) or _Stop()))

    made = agentd._agent(settings, cast(Any, None))
    assert made.bounds is settings.bounds
    assert made.bounds.phase_timeout == 3600
    assert cast(Any, made.engine).bounds is settings.bounds
    assert made.updater()._bounds is settings.bounds
    assert made.outbox._limit == 7
    assert made.root_trust == "first-use"  # the trust store was bootstrapped within the configured bounds
    with pytest.raises(_StoppedError):
        agentd.serve(settings)
    assert connected[0]["bounds"] is settings.bounds


class _StoppedError(Exception):
    """Where the test ends `serve`: once it has connected."""


class _Stop:
    def __enter__(self) -> None:
        raise _StoppedError

    def __exit__(self, *_exc: object) -> None:
        return None

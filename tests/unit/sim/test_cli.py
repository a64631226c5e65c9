"""`edgefleet sim`: its help says it is a simulator; bad settings are usage errors naming the flag."""

from __future__ import annotations

import pytest

from edgefleet.cli.main import main


def test_help_says_it_is_a_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--help"]) == 0
    text = capsys.readouterr().out
    assert "SIMULATOR" in text
    for flag in ("--devices", "--hub", "--token", "--fail-rate", "--offline", "--seed", "--report-interval"):
        assert flag in text


def test_a_bad_setting_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "--devices", "3", "--hub", "https://hub:8443", "--token", "efe_x", "--download-time", "-1"])
    assert code == 2
    assert "--download-time" in capsys.readouterr().err


def test_the_sim_is_listed_among_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "sim" in capsys.readouterr().out

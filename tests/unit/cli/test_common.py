"""CLI helpers: durations and tags are parsed strictly, with usage errors that carry a hint."""

from __future__ import annotations

import pytest

from edgefleet.cli.common import EXIT_USAGE, CliError, parse_duration, parse_tags


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("2w", 1209600)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "0h", "-1h", "1.5h", "10", "3y", "1 h"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(CliError) as error:
        parse_duration(text)
    assert error.value.exit_code == EXIT_USAGE
    assert error.value.hint


def test_tags():
    assert parse_tags(["env=prod", "line=", "a=b=c"]) == {"env": "prod", "line": "", "a": "b=c"}
    for bad in (["novalue"], ["=v"]):
        with pytest.raises(CliError):
            parse_tags(bad)

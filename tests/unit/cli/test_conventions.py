"""Every command keeps the CLI's conventions: help, --json on listings, one-line errors, exit codes, completion.

The commands are read from the Typer app itself, so a new command is checked without being
listed here, except where a sample invocation is needed: the table of hub commands below
must name every command that takes --hub, or the test says which one is missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from edgefleet.cli.app import app
from edgefleet.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from edgefleet.cli.main import main
from edgefleet.hub import datadir
from edgefleet.publisher import keys as publisher_keys

ROOT = Path(__file__).resolve().parents[3]
LISTINGS = {"list", "show", "status", "preview", "why", "assignments", "plan", "delegations"}
UNREACHABLE = ["--hub", "https://127.0.0.1:9", "--token", "efa_not-a-token"]


def leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield path, command
        return
    for name, sub in subcommands.items():
        yield from leaves(sub, (*path, name))


COMMANDS = dict(leaves(get_command(app)))


def options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", ())}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert lines, stderr
    assert lines[0].startswith("error: "), stderr
    assert len(lines) <= 2, stderr
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), stderr


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_has_help(path, capsys):
    code, out, _ = run([*path, "--help"], capsys)
    assert code == 0
    assert COMMANDS[path].help, f"`edgefleet {' '.join(path)}` has no help text (its docstring)"
    assert "Usage:" in out


@pytest.mark.parametrize("path", sorted(p for p in COMMANDS if p[-1] in LISTINGS), ids=" ".join)
def test_every_listing_takes_json(path):
    assert "--json" in options(COMMANDS[path])


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_an_unknown_flag_is_one_line_and_a_hint_naming_the_help(path, capsys):
    code, out, err = run([*path, "--no-such-flag"], capsys)
    assert code == EXIT_USAGE
    assert out == ""
    assert_one_line_error(err)
    assert "No such option: --no-such-flag" in err
    assert f"see 'edgefleet {' '.join(path)} --help'" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["deploy"], "one of: create, preview, apply"),
        (["deploy", "nope"], "No such command 'nope'"),
        (["device", "show"], "Missing argument"),
        (["device", "list", "--limit", "many"], "Invalid value for '--limit'"),
        (["deploy", "create", "--release", "a@1"], "Missing option '--target'"),
    ],
)
def test_usage_errors_are_one_line(argv, expected, capsys):
    code, _, err = run(argv, capsys)
    assert code == EXIT_USAGE
    assert_one_line_error(err)
    assert expected in err


# Every command that talks to the hub, with arguments that get it as far as the network.
HUB_COMMANDS: dict[tuple[str, ...], list[str]] = {
    ("token", "create"): ["--fleet", "f"],
    ("token", "list"): [],
    ("token", "revoke"): ["tok-1"],
    ("device", "list"): [],
    ("device", "show"): ["dev-1"],
    ("device", "tag"): ["dev-1", "env=prod"],
    ("device", "accept"): ["dev-1"],
    ("device", "reject"): ["dev-1"],
    ("device", "revoke"): ["dev-1"],
    ("device", "assign"): ["dev-1", "app@1.0.0"],
    ("device", "retry"): ["dev-1"],
    ("device", "why"): ["dev-1"],
    ("device", "assignments"): ["dev-1"],
    ("device", "env", "set"): ["dev-1", "A=1"],
    ("device", "env", "unset"): ["dev-1", "A"],
    ("device", "env", "list"): ["dev-1"],
    ("fleet", "env", "set"): ["f", "A=1"],
    ("fleet", "env", "unset"): ["f", "A"],
    ("fleet", "env", "list"): ["f"],
    ("deploy", "create"): ["--release", "app@1.0.0", "--target", "env=prod"],
    ("deploy", "preview"): ["--release", "app@1.0.0", "--target", "env=prod"],
    ("deploy", "apply"): ["{deployments}"],
    ("deploy", "list"): [],
    ("deploy", "status"): ["d1"],
    ("deploy", "pause"): ["d1"],
    ("deploy", "resume"): ["d1"],
    ("deploy", "abort"): ["d1"],
    ("user", "create"): ["ann", "--role", "viewer"],
    ("user", "list"): [],
    ("user", "revoke"): ["ann"],
    ("apitoken", "create"): ["--user", "ann"],
    ("apitoken", "list"): [],
    ("apitoken", "revoke"): ["tok-1"],
    ("audit", "list"): [],
    ("audit", "verify"): [],
    ("repo", "init"): ["--keys", "{keys}"],
    ("release", "list"): [],
}
# These take --hub too, but check local input before they connect (tested with it in their
# own tests), or are long-running processes that retry the hub by design.
HUB_COMMANDS_ELSEWHERE = {
    ("keys", "rotate"): "reads and re-signs the key directory first (tests/integration/releases)",
    ("keys", "delegate"): "reads and signs the key directory first (tests/e2e/test_delegation_cli.py)",
    ("keys", "revoke-delegation"): "reads and signs the key directory first (tests/e2e/test_delegation_cli.py)",
    ("repo", "rotate-online-keys"): "reads the key directory's root first (tests/unit/cli/test_hub_keys.py, tests/e2e)",
    ("release", "push"): "reads the signed build first (tests/e2e)",
    ("release", "publish"): "builds and signs first (tests/e2e)",
    ("agent", "run"): "retries an unreachable hub with backoff, as an agent must",
    ("sim",): "retries an unreachable hub, as its devices must",
}


def test_the_table_names_every_command_that_talks_to_the_hub():
    talking = {path for path, command in COMMANDS.items() if "--hub" in options(command)}
    assert talking - set(HUB_COMMANDS) - set(HUB_COMMANDS_ELSEWHERE) == set()
    assert set(HUB_COMMANDS) <= talking


@pytest.fixture(scope="module")
def local_inputs(tmp_path_factory) -> dict[str, str]:
    from edgefleet.publisher.keys import init_keys

    tmp = tmp_path_factory.mktemp("inputs")
    (tmp / "deployments.yaml").write_text("deployments:\n  - name: d1\n    release: app@1.0.0\n    target: env=prod\n")
    init_keys(tmp / "keys")
    return {"deployments": str(tmp / "deployments.yaml"), "keys": str(tmp / "keys")}


@pytest.mark.parametrize("path", sorted(HUB_COMMANDS), ids=" ".join)
def test_an_unreachable_hub_is_one_line_with_a_hint_and_exit_4(path, local_inputs, capsys):
    argv = [arg.format(**local_inputs) for arg in HUB_COMMANDS[path]]
    code, out, err = run([*path, *argv, *UNREACHABLE], capsys)
    assert code == EXIT_UNAVAILABLE, err
    assert out == ""
    assert_one_line_error(err)
    assert "cannot reach the hub" in err
    assert "hint: check --hub and --ca" in err


def test_a_missing_hub_or_token_is_a_usage_error_before_anything_is_sent(capsys, monkeypatch):
    for name in ("EDGEFLEET_HUB", "EDGEFLEET_TOKEN", "EDGEFLEET_CA"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run(["device", "list"], capsys)
    assert (code, err.splitlines()) == (
        EXIT_USAGE,
        ["error: no hub given", "hint: pass --hub URL or set EDGEFLEET_HUB"],
    )
    code, _, err = run(["device", "list", "--hub", "https://127.0.0.1:9"], capsys)
    assert code == EXIT_USAGE
    assert "no API token given" in err
    for pasted in ("admin token: efa_x\n", "efa_x\u201d", "efa_\tx"):  # a whole line, a smart quote, a tab
        code, _, err = run(["device", "list", "--hub", "https://127.0.0.1:9", "--token", pasted], capsys)
        assert code == EXIT_USAGE
        assert_one_line_error(err)
        assert "the API token holds spaces, line breaks or characters other than ASCII" in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["keys", "init", "--dir", "/proc/no-such/keys"], "cannot create keys in /proc/no-such/keys"),
        (["hub", "init", "--data-dir", "/proc/no-such/hub"], "cannot create /proc/no-such/hub"),
    ],
)
def test_an_unwritable_directory_is_one_line_and_leaves_nothing(argv, expected, capsys):
    code, _, err = run(argv, capsys)
    assert code == EXIT_UNAVAILABLE
    assert_one_line_error(err)
    assert expected in err


@pytest.mark.parametrize("existing", [False, True], ids=["new dir", "empty dir"])
def test_a_key_init_cut_short_by_the_disk_leaves_no_half_key_directory(tmp_path, monkeypatch, capsys, existing):
    keys = tmp_path / "keys"
    if existing:
        keys.mkdir()
    written: list[Path] = []
    real = publisher_keys.write_private_file

    def disk_full_on_the_third_key(path: Path, data: bytes) -> None:
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(path)
        real(path, data)

    monkeypatch.setattr(publisher_keys, "write_private_file", disk_full_on_the_third_key)
    code, _, err = run(["keys", "init", "--dir", str(keys), "--threshold", "2"], capsys)
    assert code == EXIT_UNAVAILABLE
    assert_one_line_error(err)
    assert "No space left on device" in err
    assert written
    assert not any(path.exists() for path in written)
    assert (keys.exists() and list(keys.iterdir()) == []) if existing else not keys.exists()


def test_a_hub_init_cut_short_by_the_disk_leaves_no_half_data_dir(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "hub"

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datadir.crypto, "write_public_file", disk_full)
    code, _, err = run(["hub", "init", "--data-dir", str(data_dir)], capsys)
    assert code == EXIT_UNAVAILABLE
    assert_one_line_error(err)
    assert "No space left on device" in err
    assert not data_dir.exists()


def test_the_documented_exit_codes_are_the_ones_used():
    documented = (ROOT / "docs" / "cli.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", documented, flags=re.MULTILINE))
    assert {int(code) for code in table} == {
        0,
        EXIT_FAILED,
        EXIT_USAGE,
        EXIT_REFUSED,
        EXIT_UNAVAILABLE,
        EXIT_INTERRUPTED,
    }


def complete(words: str) -> list[str]:
    """What bash completion offers for `words` (the last word is the one being completed)."""
    command = Path(sys.executable).with_name("edgefleet")
    env = {
        **os.environ,
        "_EDGEFLEET_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    result = subprocess.run([command], env=env, capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.split()


def test_shell_completion_offers_groups_commands_and_options():
    assert complete("edgefleet dep") == ["deploy"]
    assert complete("edgefleet deploy st") == ["status"]
    assert set(complete("edgefleet deploy create --wa")) == {"--waves", "--wave-timeout"}
    script = subprocess.run(
        [Path(sys.executable).with_name("edgefleet"), "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "SHELL": "/bin/bash"},
    ).stdout
    assert "_EDGEFLEET_COMPLETE=complete_bash" in script


def test_ctrl_c_exits_130_and_a_command_that_ends_normally_exits_0(capsys):
    import typer

    from edgefleet.cli.common import run_app

    toy = typer.Typer()

    @toy.command("wait")
    def wait() -> None:
        raise KeyboardInterrupt

    @toy.command("done")
    def done() -> None:
        print("done")

    assert run_app(toy, ["wait"], prog_name="toy") == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "aborted"
    assert run_app(toy, ["done"], prog_name="toy") == 0


def test_a_key_init_interrupted_by_ctrl_c_leaves_no_half_key_directory(tmp_path, monkeypatch):
    keys = tmp_path / "keys"

    def interrupted(path: Path, data: bytes) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(publisher_keys, "write_private_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        publisher_keys.init_keys(keys)
    assert not keys.exists()

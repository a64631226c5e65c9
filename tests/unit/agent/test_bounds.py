"""The agent's one settings object for its bounds: read from the config's [bounds], checked, and used by each part."""

from __future__ import annotations

import ast
import json
from datetime import timedelta
from pathlib import Path

import pytest

from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.config import AgentConfigError, load_settings
from edgefleet.agent.journal import Journal
from edgefleet.agent.outbox import Outbox, OutboxError
from edgefleet.agent.policy import PolicyError, load_policy
from edgefleet.agent.report import report_due
from edgefleet.agent.runner import event

AGENT = Path(__file__).parents[3] / "src" / "edgefleet" / "agent"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_the_config_file_sets_bounds_and_leaves_the_rest_at_their_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[bounds]\nphase_timeout = 3600\noutbox_events = 5000\n"), {})
    assert (settings.bounds.phase_timeout, settings.bounds.outbox_events) == (3600, 5000)
    assert settings.bounds.model_copy(update={"phase_timeout": 1800.0, "outbox_events": 1000}) == DEFAULT_BOUNDS


def test_disk_reserve_at_the_top_is_still_read_as_before(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "disk_reserve = 1024\n"), {}).bounds.disk_reserve == 1024
    with pytest.raises(AgentConfigError, match="given twice"):
        load_settings(write(tmp_path, "disk_reserve = 1\n[bounds]\ndisk_reserve = 2\n"), {})


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[bounds]\nphase_timeout = 1\n", "bounds.phase_timeout"),
        ("[bounds]\noutbox_events = -1\n", "bounds.outbox_events"),
        ("[bounds]\nevent_batch = 101\n", "bounds.event_batch"),  # the hub takes at most 100
        ("[bounds]\nphase_timout = 60\n", "bounds.phase_timout"),  # a typo is an error, not a default
        ('[bounds]\nstop_timeout = "10"\n', "bounds.stop_timeout"),
        ("[bounds]\nupdate_retry_first = 60\nupdate_retry_max = 30\n", "bounds"),
        ("[bounds]\njournal_keep = 2\nmax_interruptions = 2\n", "bounds"),
        ("[bounds]\nevent_bytes = 65536\n", "bounds"),  # 100 of them would be more than a hub takes at once
        ("[bounds]\nlog_tail_bytes = 10000\n", "bounds.log_tail_bytes"),  # more than an event holds
        ("bounds = 3\n", "bounds"),
    ],
)
def test_a_bound_out_of_its_range_names_itself(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(AgentConfigError, match=rf"agent.toml: {where}\b"):
        load_settings(write(tmp_path, text), {})


def test_the_outbox_and_the_journal_keep_what_their_bounds_say(tmp_path: Path) -> None:
    bounds = Bounds(outbox_events=2, event_bytes=4096, event_batch=1, journal_keep=3, journal_error_chars=100)
    outbox = Outbox(tmp_path / "outbox.db", bounds=bounds)
    for n in range(3):
        outbox.add({"n": n})
    assert ([body["n"] for _, body in outbox.pending().events], outbox.dropped()) == ([1], 1)
    with pytest.raises(OutboxError, match="4096"):
        outbox.add({"logs": "x" * 4096})
    journal = Journal(tmp_path / "journal.db", bounds=bounds)
    hour = timedelta(hours=1)
    for version in ("1.1.0", "1.2.0", "1.3.0", "1.4.0"):
        tx = journal.begin("web", from_release="1.0.0", to_release=version, strategy="hand-over", timeout=hour)
        tx = journal.advance(tx, "rolling-back", timeout=hour, error="e" * 500)
        journal.settle(journal.advance(tx, "rolled-back"))
    kept = [row[0] for row in journal._db.execute("SELECT error FROM transactions")]  # the pruned are gone
    assert [len(error) for error in kept] == [100, 100, 100]


def test_an_event_is_cut_to_the_outbox_bound_it_is_given() -> None:
    told = event(None, "web", "failed", to_release="1.0.0", logs="x" * 8000, max_bytes=4096)
    assert len(json.dumps(told, sort_keys=True)) <= 4096


def test_the_report_refresh_and_shares_come_from_the_bounds() -> None:
    last = {"disk_free": 1000, "os": "Linux"}
    bounds = Bounds(report_refresh=60, report_disk_share=0.5)
    assert not report_due({"disk_free": 1400, "os": "Linux"}, last, last_at=0, now=59, bounds=bounds)
    assert report_due({"disk_free": 1400, "os": "Linux"}, last, last_at=0, now=59)  # 5 % by default
    assert report_due(last, last, last_at=0, now=60, bounds=bounds)


def test_a_policy_file_is_read_no_further_than_its_bound(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("allow = []\n" + "#" * 2000)
    with pytest.raises(PolicyError, match="larger than 1024 bytes"):
        load_policy(policy, Bounds(policy_bytes=1024))
    assert load_policy(policy, Bounds(policy_bytes=4096)).allow == frozenset()


def test_no_module_of_the_agent_keeps_a_bound_of_its_own() -> None:
    """Upper-case module constants that are numbers are bounds: they belong in `Bounds` (or are listed here)."""
    allowed = {
        "config.py": {"MAX_CONFIG_BYTES"},  # read before the settings that hold the bounds
        "bounds.py": {"EVENT_ENVELOPE"},  # what the wire adds to each event: a fact the bounds are checked with
        "spec.py": {"HARDENING_VERSION", "LOG_MAX_FILES", "DEFAULT_RESTARTS", "NOFILE", "LOW_PORT"},  # definitions
        "engine/docker.py": {"NPROC"},  # part of each container's definition
        "fetcher.py": {"CHUNK"},  # how much is read at a time, not a limit
        "engine/bundled.py": {"BLOCK", "CHUNK"},  # the tar format's block; a read size
        "progress.py": {"LOG_INTERVAL", "LARGE", "MAX_TRACKED"},  # how downloads are shown
        "identity.py": {"TOKEN_LIFETIME"},  # within what every hub takes
        "manifests.py": {"MAX_DOCUMENT_BYTES"},  # follows the manifest format's own limit
        "tufclient.py": {"TIMEOUT"},  # edgefleet-tuf-client, a program of its own
    }
    found = {}
    for path in sorted(AGENT.rglob("*.py")):
        name = str(path.relative_to(AGENT))
        for node in ast.parse(path.read_text()).body:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
            value = getattr(node, "value", None)
            for target in targets:
                if not (isinstance(target, ast.Name) and target.id.isupper()):
                    continue
                if isinstance(value, ast.Constant | ast.BinOp | ast.Call) and _numeric(value):
                    found.setdefault(name, set()).add(target.id)
    strays = {name: names - allowed.get(name, set()) for name, names in found.items()}
    assert {name: names for name, names in strays.items() if names} == {}


def _numeric(value: ast.expr) -> bool:
    if isinstance(value, ast.Constant):
        return isinstance(value.value, int | float) and not isinstance(value.value, bool)
    if isinstance(value, ast.BinOp):
        return _numeric(value.left) and _numeric(value.right)
    if isinstance(value, ast.Call):  # timedelta(minutes=30)
        return getattr(value.func, "id", "") == "timedelta"
    return False


def test_the_agent_guide_names_every_bound() -> None:
    guide = (Path(__file__).parents[3] / "docs" / "agent.md").read_text()
    assert [name for name in Bounds.model_fields if f"`{name}`" not in guide] == []


def test_an_event_fits_the_smallest_outbox_bound_whatever_its_text(tmp_path: Path) -> None:
    smallest = Bounds(event_bytes=4096)
    told = event(
        None, "web", "failed", to_release="1.0.0", reason="\U0001f525" * 2000, logs="\U0001f525" * 8000, max_bytes=4096
    )
    assert len(json.dumps(told, sort_keys=True)) <= 4096
    Outbox(tmp_path / "outbox.db", bounds=smallest).add(told)

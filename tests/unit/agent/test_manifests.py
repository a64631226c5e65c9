"""Installed releases' manifests read from their JSON document: the same release as the YAML, without PyYAML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgefleet.agent.manifests import DOCUMENT, MAX_DOCUMENT_BYTES, keep_document, read_installed
from edgefleet.manifest import ManifestError, parse_manifest, read_document
from edgefleet.releases import MANIFEST_NAME
from tests.unit.test_manifest import GOOD


def install(directory: Path, text: str) -> bool:
    """What the verifier leaves in a release's directory: the YAML as signed, and its document when JSON holds it."""
    directory.mkdir(exist_ok=True)
    (directory / MANIFEST_NAME).write_text(text)
    return keep_document(directory, read_document(text))


def test_an_installed_release_reads_the_same_from_its_document_as_from_its_yaml(tmp_path: Path) -> None:
    text = yaml.safe_dump(GOOD, sort_keys=False)
    assert install(tmp_path, text)
    (tmp_path / MANIFEST_NAME).write_text("not read")  # the document alone says it
    assert read_installed(tmp_path) == parse_manifest(text, source=str(tmp_path))


def test_reading_an_installed_release_loads_no_yaml_parser(tmp_path: Path) -> None:
    assert install(tmp_path, yaml.safe_dump(GOOD))
    probe = (
        "import sys\nfrom pathlib import Path\nfrom edgefleet.agent.manifests import read_installed\n"
        f"release = read_installed(Path({str(tmp_path)!r}))\nprint(release.app, 'yaml' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["sensor", "False"]


@pytest.mark.parametrize(
    "odd",
    [{80: "a number as a key"}, yaml.safe_load("at: 2026-12-06"), b"bytes", {1, 2}, float("nan")],
    ids=["number-key", "date", "bytes", "set", "nan"],
)
def test_a_document_json_cannot_hold_as_it_is_is_not_kept(tmp_path: Path, odd: object) -> None:
    """Read back, such a document would not be what the YAML gave: the YAML is read instead."""
    assert not keep_document(tmp_path, GOOD | {"x-note": odd})
    assert not (tmp_path / DOCUMENT).exists()
    assert keep_document(tmp_path, GOOD | {"x-note": "2026-12-06"})  # as text, it is


def test_text_python_holds_but_utf8_cannot_encode_is_kept_as_it_is(tmp_path: Path) -> None:
    """YAML's "\\ud800" is a lone surrogate: the release installs, and its document reads back the same."""
    document = read_document('x-note: "\\ud800"')
    assert document == {"x-note": "\ud800"}
    assert keep_document(tmp_path, document)
    assert json.loads((tmp_path / DOCUMENT).read_bytes()) == document


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"{torn",
        b"[" * 100_000 + b"]" * 100_000,
        b" " * (MAX_DOCUMENT_BYTES + 1),
        "{\udcff}".encode("utf-8", "surrogatepass"),
    ],
    ids=["empty", "torn", "deep", "oversized", "not-utf8"],
)
def test_an_unreadable_document_falls_back_to_the_yaml(tmp_path: Path, document: bytes) -> None:
    text = yaml.safe_dump(GOOD)
    assert install(tmp_path, text)
    (tmp_path / DOCUMENT).write_bytes(document)
    assert read_installed(tmp_path) == parse_manifest(text, source=str(tmp_path))


def test_a_release_installed_by_an_older_agent_has_no_document_and_reads_from_its_yaml(tmp_path: Path) -> None:
    text = yaml.safe_dump(GOOD)
    (tmp_path / MANIFEST_NAME).write_text(text)
    assert read_installed(tmp_path).app == "sensor"
    (tmp_path / MANIFEST_NAME).unlink()
    with pytest.raises(FileNotFoundError):
        read_installed(tmp_path)


def test_a_document_is_checked_as_the_yaml_is(tmp_path: Path) -> None:
    """The document passes the manifest's checks again when read: it is not trusted for being JSON."""
    assert install(tmp_path, yaml.safe_dump(GOOD))
    changed = json.loads((tmp_path / DOCUMENT).read_text())
    changed["services"]["sensor"]["privileged"] = True
    (tmp_path / DOCUMENT).write_text(json.dumps(changed))
    with pytest.raises(ManifestError, match="privileged"):
        read_installed(tmp_path)

"""The installed releases' manifests, kept beside their YAML as JSON: an agent at rest loads no YAML parser.

A release's compose.yaml is checked against its signed length and hashes and parsed when it
is installed (`agent.verify`); its document is then written beside it as compose.json in the
same staging directory, durable before the release is named. The agent reads an installed
release's manifest (at start, and when it prunes old releases) from that JSON, through the
same checks as the YAML (`manifest.release_of`), so PyYAML (1.4 MB of an idle agent's memory)
loads only when a release is installed. A document that JSON cannot hold exactly as YAML
gave it (a date, a number as a key) is not kept; a release without a readable compose.json
(one installed by an older agent) is read from its YAML, as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgefleet.manifest import MAX_MANIFEST_BYTES, Release, parse_manifest, release_of
from edgefleet.releases import MANIFEST_NAME

DOCUMENT = "compose.json"
MAX_DOCUMENT_BYTES = 4 * MAX_MANIFEST_BYTES
"""JSON spells some YAML longer (`a:` is `"a":null`); a document that needs more than this is not kept."""


def keep_document(directory: Path, document: Any) -> bool:
    """Write `document` (a verified compose.yaml's, as read) to `directory`/compose.json; whether it was kept.

    Raises:
        OSError: the file could not be written.
    """
    try:
        # ASCII: a lone surrogate (YAML's "\\ud800") is text Python holds but UTF-8 cannot encode.
        text = json.dumps(document, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):  # a date, bytes, a set: JSON has none
        return False
    data = text.encode()
    if len(data) > MAX_DOCUMENT_BYTES or json.loads(data) != document:  # a key that JSON makes text
        return False
    (directory / DOCUMENT).write_bytes(data)
    return True


def read_installed(directory: Path) -> Release:
    """The manifest of the release installed in `directory`: from its compose.json, else its compose.yaml.

    Raises:
        OSError: neither file could be read.
        ManifestError: the manifest does not pass the checks (it did when it was installed).
    """
    source = str(directory)
    try:
        with (directory / DOCUMENT).open("rb") as file:
            data = file.read(MAX_DOCUMENT_BYTES + 1)
        if len(data) <= MAX_DOCUMENT_BYTES:
            return release_of(json.loads(data), source=source)
    except (OSError, ValueError, RecursionError):  # none (an older agent installed it), or unreadable: the YAML
        pass
    return parse_manifest((directory / MANIFEST_NAME).read_bytes(), source=source)

"""Verification of byte-identical TUF metadata shared between the simulated devices of one worker process.

Every simulated device verifies the image repository's metadata with the agent's own code
(python-tuf's client), and the image repository's files are the same bytes for every device:
without sharing, each worker process parses, canonicalises and checks the signatures of the
same timestamp, snapshot and targets once per device, and the simulator, not the hub, becomes
the bottleneck of a large rollout.

`share_verification` wraps python-tuf's loader of one metadata file (its private
`trusted_metadata_set._load_from_metadata`, so a change of python-tuf that drops it fails
loudly here and in the tests): a file whose bytes, role and delegating keys (the keys and
threshold its delegator names for it) are exactly those of a file already loaded *and
verified* in this process is answered with that result. What is shared is only the pure
function of those inputs (parse, canonical form, signature threshold); every device still
fetches every file from the hub, and its own trusted state still checks versions, expiry,
rollback and the hashes the snapshot and timestamp pin. A file that failed is never kept,
so a forged or altered one fails on every device. Director metadata names its device, so it
is never byte-identical across devices and is in effect never shared.

This runs in the simulator's worker processes only (`sim.work.start_worker`); the agent never
calls it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from tuf.ngclient._internal import trusted_metadata_set

KEPT = 16
"""Verified files kept per worker process (the image repository's few current files, and room to spare)."""

Loader = Callable[..., Any]

_lock = threading.Lock()
_installed: Loader | None = None
_results: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
shared = 0
"""Files answered from what another device of this process verified (for tests and the simulator's figures)."""


def share_verification() -> None:
    """Install the shared loader in this process (idempotent)."""
    global _installed  # one per process, like the loader it wraps
    with _lock:
        if _installed is not None:
            return
        original: Loader = trusted_metadata_set._load_from_metadata
        trusted_metadata_set._load_from_metadata = _sharing(original)
        _installed = original


def stop_sharing() -> None:
    """Put python-tuf's own loader back and forget what was verified (tests)."""
    global _installed  # one per process
    with _lock:
        if _installed is not None:
            trusted_metadata_set._load_from_metadata = _installed
            _installed = None
        _results.clear()


def _sharing(original: Loader) -> Loader:
    def load(role: type[Any], data: bytes, delegator: Any = None, role_name: str | None = None) -> Any:
        global shared  # a counter of this process
        try:
            key = (role.type, role_name, hashlib.sha256(data).digest(), _delegation(delegator, role_name or role.type))
        except (ValueError, TypeError, AttributeError):
            return original(role, data, delegator, role_name)  # no such delegation: the original says why
        with _lock:
            held = _results.get(key)
            if held is not None:
                _results.move_to_end(key)
                shared += 1
                return held
        result = original(role, data, delegator, role_name)  # raises on anything that does not verify
        with _lock:
            _results[key] = result
            while len(_results) > KEPT:
                _results.popitem(last=False)
        return result

    return load


def _delegation(delegator: Any, role_name: str) -> tuple[Any, ...] | None:
    """What the delegator's verification of `role_name` depends on: its threshold and the keys it names."""
    if delegator is None:
        return None  # parsed only: the caller verifies (a trusted root read from disk)
    role = delegator.get_delegated_role(role_name)
    keys: list[tuple[Any, ...]] = []
    for keyid in sorted(role.keyids):
        try:
            key = delegator.get_key(keyid)
        except ValueError:
            keys.append((keyid,))
            continue
        keys.append((keyid, key.keytype, key.scheme, json.dumps(key.keyval, sort_keys=True)))
    return (role.threshold, tuple(keys))

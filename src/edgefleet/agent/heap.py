"""Give back what a finished update used: the agent at rest keeps only what polling and reporting need.

Verifying a release and carrying out its transaction parse metadata and manifests and load
python-tuf; CPython frees those objects, but glibc's allocator keeps the freed pages
mapped, so an agent that updated once would stay as large as its busiest moment. `trim`
collects what is garbage and asks the C library to return free pages (glibc's
`malloc_trim`; other C libraries, such as musl, have nothing to trim and it does nothing).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def trim() -> None:
    """Collect garbage and return the allocator's free pages to the system (never fails)."""
    gc.collect()
    try:
        import ctypes  # loaded at the first update: an agent that never updated has nothing to give back

        ctypes.CDLL(None).malloc_trim(0)
    except (ImportError, OSError, AttributeError):  # no ctypes, or not glibc: nothing to trim
        log.debug("malloc_trim is not available here")

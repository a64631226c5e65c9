"""Smaller TLS read buffers for processes that hold thousands of connections (hub workers, the simulator).

asyncio gives every TLS connection a read buffer of `SSLProtocol.max_size`, 256 KiB, which
`bytearray` zero-fills, so all of it is resident. A hub holds a connection per device: it
kept 315 KiB per idle connection, more while connections came and went, and 6.4 GiB for
20,000 devices (docs/benchmarks.md, "Hub memory per device connection"). A TLS record
carries at most 16 KiB of plaintext, so 16 KiB buffers cost a large upload only more turns
of the loop; an idle connection then keeps 52 KiB. asyncio has no public setting for this:
the class attribute (Python 3.11 and later) is set, and where it is missing nothing is
changed. `tests/integration/hub/test_workers.py` checks the effect on two workers.
"""

from __future__ import annotations

import asyncio.sslproto

TLS_READ_BUFFER = 16 * 1024
"""Bytes: one TLS record's largest plaintext."""


def limit_tls_read_buffers(size: int = TLS_READ_BUFFER) -> bool:
    """Make this process's new asyncio TLS connections read through `size`-byte buffers; False if unsupported."""
    protocol = getattr(asyncio.sslproto, "SSLProtocol", None)
    if protocol is None or not isinstance(getattr(protocol, "max_size", None), int):
        return False
    protocol.max_size = size
    return True

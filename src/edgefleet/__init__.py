"""edgefleet: deploy and update containerized applications on fleets of edge devices.

httpx is kept from importing its command-line client: with rich, click and pygments
installed (our CLI needs them) httpx's `__init__` imports `httpx._main`, 6 MiB and 40 ms
that no edgefleet process uses, and on a device the agent's memory is what counts. A `None`
in `sys.modules` makes that import fail, which httpx handles (it then has no CLI). Here,
because this runs before any module of ours imports httpx.
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: "known missing" to the import system

__version__ = "0.1.0"

"""The device agent: enrolls, follows the hub, verifies releases and runs them as transactions.

An idle agent's memory is mostly the libraries it imports, so what only an update needs
(python-tuf, the verification) loads when a target first changes, and httpx is kept from
importing its command-line client: with rich, click and pygments installed (the main CLI
needs them) httpx's `__init__` imports `httpx._main`, 6 MiB and 40 ms the agent never uses.
A `None` in `sys.modules` makes that import fail, which httpx handles (it then has no CLI).
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: "known missing" to the import system

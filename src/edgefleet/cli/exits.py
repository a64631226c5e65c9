"""Exit codes and the user-facing error, without Rich: the agent's process (`cli.agentd`) needs them too.

Exit codes: 0 success; 1 the operation ran and failed (e.g. `audit verify` found tampering);
2 usage error; 3 the hub refused the request; 4 the hub could not be reached, or local
configuration is unusable; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys

from edgefleet.errors import EdgefleetError

EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNAVAILABLE = 1, 2, 3, 4
EXIT_INTERRUPTED = 130


class CliError(EdgefleetError):
    """A user-facing failure: printed as one line, never as a traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILED, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


def error_lines(message: str, hint: str | None) -> str:
    """``error: MESSAGE`` on one line (whatever a driver said), and ``hint: HINT`` when there is one."""
    text = f"error: {' '.join(message.split())}"
    return f"{text}\nhint: {hint}" if hint else text


def print_error(message: str, hint: str | None) -> None:
    """`error_lines` on standard error, plainly."""
    print(error_lines(message, hint), file=sys.stderr, flush=True)

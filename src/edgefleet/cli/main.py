"""The `edgefleet` entry point: runs a command of `cli.app`, or of the agent alone, and turns errors into one line.

`edgefleet agent ...` runs the agent's command group without importing the rest of the CLI
(the hub, FastAPI, SQLAlchemy): a device that starts its agent this way carries what
`edgefleet-agent` carries, no more (`bench/agent_footprint.py` measures both).
"""

from __future__ import annotations

import sys

AGENT_GROUP = "agent"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line (and a hint) on stderr, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == [AGENT_GROUP]:
        from edgefleet.cli.agent import app as agent_app
        from edgefleet.cli.common import run_app

        return run_app(agent_app, args[1:], prog_name=f"edgefleet {AGENT_GROUP}")
    from edgefleet.cli.app import app
    from edgefleet.cli.common import run_app

    return run_app(app, argv, prog_name="edgefleet")


if __name__ == "__main__":
    sys.exit(main())

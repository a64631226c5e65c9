"""What an agent process imports: no python-tuf until a target changes, no hub code whichever command starts it.

An idle agent's memory is mostly its imports (docs/benchmarks.md, "Agent footprint"), so
these are checked in a fresh interpreter each: a module-level import that pulls the
verification stack or the hub back in fails here before it shows in the benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys

UPDATE_ONLY = ("tuf", "securesystemslib", "edgefleet.agent.verify", "edgefleet.agent.fetcher")
HUB = ("edgefleet.hub", "fastapi", "sqlalchemy", "starlette", "uvicorn")
COMMAND_LINE = ("typer", "rich", "click", "pygments", "edgefleet.cli.common", "edgefleet.cli.app")
ENGINE_SDK = ("docker", "requests", "urllib3")
MANIFEST_PARSER = ("yaml",)  # loaded when a release is installed: at rest its JSON is read (agent.manifests)
UPDATE_TOOLS = ("tarfile", "ctypes")  # a bundle's reader, and the heap's trim after an update


def loaded(code: str) -> dict[str, bool]:
    """Module name -> whether it is really loaded (False: blocked by a None entry), after `code` ran."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{n: m is not None for n, m in sys.modules.items()}}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def run_cli(entry: str, *argv: str) -> str:
    """Code that runs a console script's `main` with `argv`, as the installed command would."""
    lines = ["import sys", f"sys.argv = ['prog', *{list(argv)!r}]", f"from {entry} import main"]
    return "\n".join([*lines, "try:", "    main()", "except SystemExit:", "    pass"])


def test_the_agent_command_loads_no_verification_stack_and_no_httpx_cli() -> None:
    modules = loaded("import edgefleet.cli.agent, edgefleet.agent.runner")
    assert not [name for name in modules if name.startswith(UPDATE_ONLY)]
    assert modules.get("httpx._main") is False  # blocked: httpx's own CLI (rich, click, pygments) stays out


def test_the_update_path_still_loads_the_verification_stack() -> None:
    modules = loaded("import edgefleet.agent.verify")
    assert modules.get("tuf.ngclient") is True


def test_edgefleet_agent_run_loads_what_edgefleet_agent_run_loads() -> None:
    """`edgefleet agent ...` runs the agent's group alone: the same modules as `edgefleet-agent ...`, no hub."""
    main_cli = loaded(run_cli("edgefleet.cli.main", "agent", "run", "--help"))
    agent_cli = loaded(run_cli("edgefleet.cli.agent", "run", "--help"))
    assert not [name for name in main_cli if name.startswith(HUB)]
    assert set(main_cli) - set(agent_cli) <= {"edgefleet.cli.main"}


def test_the_other_groups_still_load_the_whole_cli() -> None:
    assert loaded(run_cli("edgefleet.cli.main", "hub", "--help")).get("edgefleet.cli.app") is True


def test_the_agents_own_process_carries_neither_the_command_line_nor_an_engine_sdk() -> None:
    """What `edgefleet agent run` and `edgefleet-agent run` become (`cli.agentd`): the agent, nothing else."""
    modules = loaded("import edgefleet.cli.agentd")
    unwanted = (*COMMAND_LINE, *ENGINE_SDK, *UPDATE_ONLY, *HUB, *MANIFEST_PARSER, *UPDATE_TOOLS)
    assert not [name for name in modules if name.startswith(unwanted)]

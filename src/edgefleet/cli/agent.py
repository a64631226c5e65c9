"""`edgefleet agent run|plan` (also `edgefleet-agent`): the device agent, and a dry run of its next steps.

`edgefleet-agent` is this group alone as its own command, and `edgefleet agent` runs it
without the rest of the CLI (`cli.main`), so a device's agent process never imports the hub
(FastAPI, SQLAlchemy, ...). `run` reads and checks its flags, then becomes `cli.agentd`, which
leaves the command line's libraries (Typer, Rich) behind too: that keeps the footprint down.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.agent.config import AgentConfigError, AgentSettings, load_settings
from edgefleet.agent.engine.docker import DockerEngine
from edgefleet.agent.errors import EngineError, PermissionRefusedError, PlanError
from edgefleet.agent.hostpaths import protected_paths
from edgefleet.agent.identity import saved_device_id
from edgefleet.agent.plan import describe
from edgefleet.agent.policy import PolicyError, load_policy
from edgefleet.agent.reconcile import plan_for
from edgefleet.agent.runner import host_facts, load_state
from edgefleet.cli import agentd
from edgefleet.cli.common import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    JsonFlag,
    out,
    print_json,
    run_app,
)

app = typer.Typer(help="The device agent.", no_args_is_help=True)
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Agent config (default /etc/edgefleet/agent.toml)")]
HubOpt = Annotated[str | None, typer.Option("--hub", help="Hub URL")]
CaOpt = Annotated[Path | None, typer.Option("--ca", help="Fleet CA certificate")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Enrollment token (first start only)")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="Agent state directory")]
EngineOpt = Annotated[
    str | None, typer.Option("--engine", help="Engine API socket, e.g. unix:///run/podman/podman.sock")
]
RootOpt = Annotated[
    Path | None, typer.Option("--repository-root", help="The publisher's root.json to trust (first start)")
]
RootDigestOpt = Annotated[
    str | None,
    typer.Option("--repository-root-sha256", help="Digest of the root to trust (edgefleet keys root-digest)"),
]
FirstRootOpt = Annotated[
    bool,
    typer.Option("--trust-first-root", help="No pinned root: take the hub's on first use (reported as not pinned)"),
]


def _settings(config: Path | None, **flags: object) -> AgentSettings:
    try:
        return load_settings(config, flags)
    except AgentConfigError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc


@app.command("run")
def run_command(
    config: ConfigOpt = None,
    hub: HubOpt = None,
    ca: CaOpt = None,
    token: TokenOpt = None,
    data_dir: DataOpt = None,
    engine: EngineOpt = None,
    repository_root: RootOpt = None,
    repository_root_sha256: RootDigestOpt = None,
    trust_first_root: FirstRootOpt = False,
    once: Annotated[bool, typer.Option("--once", help="One cycle, then exit")] = False,
) -> None:
    """Enroll if needed, then poll the hub, verify, reconcile and report until stopped (SIGTERM).

    A first start needs the image repository's root pinned (--repository-root or
    --repository-root-sha256, or the config), or --trust-first-root.
    """
    given = {
        "hub_url": hub,
        "ca": ca,
        "enrollment_token": token,
        "data_dir": data_dir,
        "engine": engine,
        "repository_root": repository_root,
        "repository_root_sha256": repository_root_sha256,
        "trust_first_root": trust_first_root or None,
    }
    flags = {name: value for name, value in given.items() if value is not None}
    _settings(config, **flags)  # a bad config or flag is refused here, before the process is replaced
    sys.stdout.flush()
    sys.stderr.flush()
    argv = agentd.command(config, flags, once=once)
    os.execv(argv[0], argv)  # noqa: S606  # our own interpreter and module: the agent without its command line


@app.command("plan")
def plan_command(
    config: ConfigOpt = None, data_dir: DataOpt = None, engine: EngineOpt = None, json_out: JsonFlag = False
) -> None:
    """Print the steps the agent would take now to run its installed releases, without taking them."""
    settings = _settings(config, data_dir=data_dir, engine=engine)
    try:
        policy = load_policy(settings.policy, settings.bounds)
    except PolicyError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    engine_client = DockerEngine(
        settings.engine,
        owner=saved_device_id(settings.data_dir) or "default",
        namespace=settings.engine_namespace,
        bounds=settings.bounds,
    )
    state = load_state(settings.data_dir)
    try:
        facts = host_facts(protected=protected_paths(settings.own_paths()))
        steps, _ = plan_for(engine_client, state.desired(policy, facts))
    except (PermissionRefusedError, PlanError) as exc:  # the release or the policy, not the engine
        hint = "the device's policy (policy in the config) decides what a release may have"
        raise CliError(str(exc), exit_code=EXIT_FAILED, hint=hint) from exc
    except EngineError as exc:
        raise CliError(
            str(exc),
            exit_code=EXIT_UNAVAILABLE,
            hint="is the container engine running? (--engine, or engine in the config)",
        ) from exc
    finally:
        engine_client.close()
    if json_out:
        print_json([{"step": type(step).__name__, **asdict(step), "description": describe(step)} for step in steps])
        return
    for step in steps:
        out.print(describe(step))
    if not steps:
        out.print("nothing to do")


def main() -> None:
    """The `edgefleet-agent` command."""
    sys.exit(run_app(app, None))


if __name__ == "__main__":
    main()

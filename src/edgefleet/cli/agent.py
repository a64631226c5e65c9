"""`edgefleet agent run|plan` (also `edgefleet-agent`): the device agent, and a dry run of its next steps.

`edgefleet-agent` is this group alone as its own command, so a device's agent process never
imports the hub (FastAPI, SQLAlchemy, ...): that keeps its memory footprint down.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.logging import RichHandler

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.config import AgentConfigError, AgentSettings, load_settings
from edgefleet.agent.engine.docker import DockerEngine
from edgefleet.agent.enroll import enroll, host_arch, refresh
from edgefleet.agent.errors import AgentError, EngineError
from edgefleet.agent.hostpaths import protected_paths
from edgefleet.agent.identity import LocalIdentity, saved_device_id
from edgefleet.agent.plan import describe
from edgefleet.agent.policy import PolicyError, load_policy
from edgefleet.agent.progress import DownloadProgress, LoggedProgress
from edgefleet.agent.reconcile import plan_for
from edgefleet.agent.runner import Agent, host_facts, load_state, run, trust_store
from edgefleet.agent.transaction import FaultHook
from edgefleet.agent.trust import RootTrustError, establish
from edgefleet.cli.common import (
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    JsonFlag,
    TerminalDownloads,
    err,
    out,
    print_json,
    run_app,
)

log = logging.getLogger("edgefleet.agent")
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


def check_engine(url: str) -> None:
    """Say which engine answers; refuse, before enrolling, one too old to drive (one that is away may come later).

    Raises:
        CliError: the engine's API is older than the agent's.
    """
    probe = DockerEngine(url)
    try:
        found = probe.identify()
        log.info("engine: %s %s (Engine API %s)", found.kind, found.version, found.api_version)
    except EngineError as exc:
        if not exc.retryable:
            raise CliError(f"cannot start: {exc.message}", exit_code=EXIT_UNAVAILABLE) from exc
        log.warning("the engine is not answering yet (%s); going on", exc.message)
    finally:
        probe.close()


def _agent(
    settings: AgentSettings,
    client: DeviceClient,
    *,
    fault: FaultHook | None = None,
    progress: DownloadProgress | None = None,
) -> Agent:
    check_engine(settings.engine)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    trust = trust_store(settings.data_dir)
    try:
        policy = load_policy(settings.policy)
        pin = settings.root_pin()
        if not trust.is_bootstrapped():
            pin.check()  # before the enrollment token is spent
        identity: LocalIdentity = enroll(
            client, settings.data_dir, token=settings.enrollment_token or "", arch=settings.arch
        )
        if identity.identity is not None and identity.identity.status == "pending":
            identity = refresh(client, settings.data_dir, identity)
        root_trust = establish(client, identity, trust, pin)
    except (PolicyError, AgentConfigError) as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    except RootTrustError as exc:
        raise CliError(
            f"cannot start: {exc}",
            exit_code=EXIT_USAGE,
            hint="pin the publisher's root (repository_root or repository_root_sha256 in the config)",
        ) from exc
    except (AgentError, OSError) as exc:
        raise CliError(f"cannot start: {exc}", exit_code=EXIT_UNAVAILABLE) from exc
    protected = protected_paths(settings.own_paths())
    agent = Agent(
        client=client,
        identity=identity,
        engine=DockerEngine(
            settings.engine, owner=identity.device_id, namespace=settings.engine_namespace, protected=protected
        ),
        data_dir=settings.data_dir,
        policy=policy,
        facts=host_facts(protected=protected),
        arch=settings.arch or host_arch(),
        poll_wait=settings.poll_wait,
        disk_reserve=settings.disk_reserve,
        fault=fault,
        progress=progress,
        root_trust=root_trust,
    )
    if root_trust == "first-use":
        log.warning("the image repository's root was taken on trust from the hub (not pinned)")
    agent.recover()
    return agent


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
    settings = _settings(
        config,
        hub_url=hub,
        ca=ca,
        enrollment_token=token,
        data_dir=data_dir,
        engine=engine,
        repository_root=repository_root,
        repository_root_sha256=repository_root_sha256,
        trust_first_root=trust_first_root or None,
    )
    serve(settings, once=once)


def serve(settings: AgentSettings, *, once: bool = False, fault: FaultHook | None = None) -> None:
    """Run the agent until SIGTERM or SIGINT (one cycle with `once`).

    `fault` is for tests only (a crash at a named update phase); no flag or setting reaches it.
    """
    if settings.hub_url is None:
        raise CliError("no hub URL", exit_code=EXIT_USAGE, hint="set hub_url in the config or pass --hub")
    if err.is_terminal:  # log lines through the console that draws the download bars, above them
        handler: logging.Handler = RichHandler(console=err, show_path=False, markup=False, rich_tracebacks=False)
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", handlers=[handler])
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping: list[int] = []

    def stop_on(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGINT, stop_on)
    terminal = TerminalDownloads() if err.is_terminal else None
    progress: DownloadProgress = terminal or LoggedProgress(logging.getLogger("edgefleet.agent.download"))
    with DeviceClient.connect(settings.hub_url, ca=settings.ca, timeout=settings.request_timeout) as client:
        agent = _agent(settings, client, fault=fault, progress=progress)
        out.print(f"agent for device {agent.identity.device_id} following {settings.hub_url}")
        cycles = iter(range(1)) if once else None
        try:
            run(
                agent,
                initial=settings.backoff_initial,
                ceiling=settings.backoff_max,
                sleep=time.sleep,
                stop=lambda: bool(stopping) or (cycles is not None and next(cycles, None) is None),
            )
        finally:
            if terminal is not None:
                terminal.close()


@app.command("plan")
def plan_command(
    config: ConfigOpt = None, data_dir: DataOpt = None, engine: EngineOpt = None, json_out: JsonFlag = False
) -> None:
    """Print the steps the agent would take now to run its installed releases, without taking them."""
    settings = _settings(config, data_dir=data_dir, engine=engine)
    try:
        policy = load_policy(settings.policy)
    except PolicyError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    engine_client = DockerEngine(
        settings.engine, owner=saved_device_id(settings.data_dir) or "default", namespace=settings.engine_namespace
    )
    state = load_state(settings.data_dir)
    try:
        facts = host_facts(protected=protected_paths(settings.own_paths()))
        steps, _ = plan_for(engine_client, state.desired(policy, facts))
    except AgentError as exc:
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

"""The agent's own process: `edgefleet agent run` and `edgefleet-agent run` parse their flags, then become this.

A device's agent runs for months, so its memory is what it imported. The command line
(Typer, Rich) has done its work once the flags are read: `cli.agent` then replaces its
process (`os.execv`, same PID, same standard streams, so systemd and signals see no change)
with ``python -m edgefleet.cli.agentd``, which imports only the agent. Both commands thus
run the same process and cost the same (`bench/agent_footprint.py`). Rich loads only when
standard error is a terminal, for the download bars.

The settings are read again here from the same config file and the same flags (passed as
JSON), so nothing the config holds (an enrollment token) appears on the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.config import AgentConfigError, AgentSettings, load_settings
from edgefleet.agent.engine.docker import DockerEngine
from edgefleet.agent.enroll import enroll, host_arch, refresh
from edgefleet.agent.errors import AgentError, EngineError
from edgefleet.agent.hostpaths import protected_paths
from edgefleet.agent.identity import LocalIdentity
from edgefleet.agent.policy import PolicyError, load_policy
from edgefleet.agent.progress import DownloadProgress, LoggedProgress
from edgefleet.agent.runner import Agent, host_facts, run, trust_store
from edgefleet.agent.transaction import FaultHook
from edgefleet.agent.trust import RootTrustError, establish
from edgefleet.cli.exits import EXIT_INTERRUPTED, EXIT_UNAVAILABLE, EXIT_USAGE, CliError, print_error

if TYPE_CHECKING:
    from edgefleet.cli.common import TerminalDownloads

log = logging.getLogger("edgefleet.agent")


def command(config: Path | None, flags: dict[str, Any], *, once: bool) -> list[str]:
    """The argv that runs this module with these settings (`cli.agent` execs it)."""
    # -P: the working directory the command was started from is not searched for modules (a root
    # agent started from a writable directory must not import what someone left there).
    argv = [sys.executable, "-P", "-m", __name__, "--flags", json.dumps(flags, default=str)]
    if config is not None:
        argv += ["--config", str(config)]
    return [*argv, "--once"] if once else argv


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
        policy = load_policy(settings.policy, settings.bounds)
        pin = settings.root_pin()
        if not trust.is_bootstrapped():
            pin.check()  # before the enrollment token is spent
        identity: LocalIdentity = enroll(
            client, settings.data_dir, token=settings.enrollment_token or "", arch=settings.arch
        )
        if identity.identity is not None and identity.identity.status == "pending":
            identity = refresh(client, settings.data_dir, identity)
        root_trust = establish(client, identity, trust, pin, bounds=settings.bounds)
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
            settings.engine,
            owner=identity.device_id,
            namespace=settings.engine_namespace,
            protected=protected,
            bounds=settings.bounds,
        ),
        data_dir=settings.data_dir,
        policy=policy,
        facts=host_facts(protected=protected),
        arch=settings.arch or host_arch(),
        poll_wait=settings.poll_wait,
        bounds=settings.bounds,
        fault=fault,
        progress=progress,
        root_trust=root_trust,
    )
    if root_trust == "first-use":
        log.warning("the image repository's root was taken on trust from the hub (not pinned)")
    agent.recover()
    return agent


def serve(settings: AgentSettings, *, once: bool = False, fault: FaultHook | None = None) -> None:
    """Run the agent until SIGTERM or SIGINT (one cycle with `once`).

    `fault` is for tests only (a crash at a named update phase); no flag or setting reaches it.
    """
    if settings.hub_url is None:
        raise CliError("no hub URL", exit_code=EXIT_USAGE, hint="set hub_url in the config or pass --hub")
    terminal = _terminal() if sys.stderr.isatty() else None
    if terminal is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping: list[int] = []

    def stop_on(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGINT, stop_on)
    progress: DownloadProgress = terminal or LoggedProgress(logging.getLogger("edgefleet.agent.download"))
    with DeviceClient.connect(
        settings.hub_url, ca=settings.ca, timeout=settings.request_timeout, bounds=settings.bounds
    ) as client:
        agent = _agent(settings, client, fault=fault, progress=progress)
        print(f"agent for device {agent.identity.device_id} following {settings.hub_url}", flush=True)
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


def _terminal() -> TerminalDownloads:
    """The download bars and log lines of a terminal (Rich, loaded only for one)."""
    from rich.logging import RichHandler

    from edgefleet.cli.common import TerminalDownloads, err  # Rich: a terminal only

    handler = RichHandler(console=err, show_path=False, markup=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", handlers=[handler])
    return TerminalDownloads()


def parser() -> argparse.ArgumentParser:
    """What `command` passes: the config file, the flags as a JSON object, and --once."""
    parsing = argparse.ArgumentParser(prog="edgefleet-agent run", description="The agent's own process (cli.agent).")
    parsing.add_argument("--config", type=Path, default=None)
    parsing.add_argument("--flags", default="{}")
    parsing.add_argument("--once", action="store_true")
    return parsing


def settings_of(arguments: argparse.Namespace) -> AgentSettings:
    """The settings from the config file and the flags, checked as `cli.agent` checked them.

    Raises:
        AgentConfigError: the flags are not a JSON object, or the settings are unusable.
    """
    try:
        flags = json.loads(arguments.flags)
    except ValueError as exc:
        raise AgentConfigError(f"--flags: not JSON ({exc})") from exc
    if not isinstance(flags, dict):
        raise AgentConfigError("--flags: not a JSON object")
    return load_settings(arguments.config, flags)


def main(argv: list[str] | None = None) -> int:
    """Run the agent with the settings `command` passed; errors are one line (and a hint), never a traceback."""
    arguments = parser().parse_args(argv)
    try:
        serve(settings_of(arguments), once=arguments.once)
    except AgentConfigError as exc:
        print_error(str(exc), None)
        return EXIT_USAGE
    except CliError as exc:
        print_error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a file or socket nothing converted: still one line
        where = f" ({exc.filename})" if exc.filename else ""
        print_error(f"{exc.strerror or exc}{where}", "check the paths and permissions given")
        return EXIT_UNAVAILABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())

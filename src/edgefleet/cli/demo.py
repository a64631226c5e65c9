"""`edgefleet demo`: the whole system on this machine, from an empty data dir to a rollout that stops a bad release."""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgefleet.cli.common import EXIT_USAGE, CliError, err, out
from edgefleet.demo.engines import ENGINE_NAMES, EngineName, installed
from edgefleet.demo.errors import DemoError
from edgefleet.demo.scenario import Demo, Options, Result
from edgefleet.demo.terminal import LiveReporter, PlainReporter


def reporter_for(console: Console, *, ci: bool) -> PlainReporter:
    """The live view on an interactive terminal; plain lines for pipes, logs, dumb terminals and `--ci`.

    Rich decides what is interactive: a terminal that is not dumb, unless TTY_INTERACTIVE says otherwise.
    """
    if console.is_interactive and not ci:
        return LiveReporter(console)
    return PlainReporter(console)


def _hold(result: Result, data_dir: Path) -> None:
    ca = (data_dir / "hub" / "ca.crt").resolve()
    out.print(f"\nDashboard: {result.hub_url}/ui/  (log in with the admin token; the hub's certificate is")
    out.print(f"signed by the demo's own CA, {ca}, so the browser asks to trust it)")
    out.print(f"Hub: {result.hub_url}")
    out.print(f"Admin token: {result.token}")
    out.print("For the CLI, in another terminal:", markup=False)
    exports = {"EDGEFLEET_HUB": result.hub_url, "EDGEFLEET_CA": str(ca), "EDGEFLEET_TOKEN": result.token}
    out.print("  export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in exports.items()), markup=False)
    out.print("Everything keeps running; press Ctrl-C to stop it all and remove what the demo made.")
    stop = threading.Event()
    # Handlers of our own, whatever this process inherited (a parent that ignores SIGINT passes that on).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    finally:  # a second Ctrl-C while stopping interrupts as usual
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    out.print("Stopping ...")


def _engine(name: str | None) -> EngineName:
    """The engine asked for, or the first installed one."""
    found = installed()
    if name is None:
        if not found:
            raise CliError("no container engine: neither podman nor dockerd is installed", hint="run scripts/setup")
        return found[0]
    for known in ENGINE_NAMES:
        if name == known:
            if known not in found:
                raise CliError(f"{known} is not installed", hint="run scripts/setup, or choose another --engine")
            return known
    raise CliError(f"unknown engine {name!r}", exit_code=EXIT_USAGE, hint="use --engine podman or --engine docker")


def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps everything (wiped by the next run)")] = Path(
        ".edgefleet/demo"
    ),
    simulated: Annotated[int, typer.Option(min=0, max=5000, help="Simulated devices beside the real agents")] = 0,
    ci: Annotated[bool, typer.Option("--ci", help="Check the end state and exit (non-interactive)")] = False,
    engine: Annotated[
        str | None,
        typer.Option("--engine", help="podman or docker (default: whichever is installed, Podman first)"),
    ] = None,
) -> None:
    """Run the demo: hub, signed releases, three real agents on Podman or Docker, a rollout, a bad release stopped."""
    chosen = _engine(engine)
    reporter = reporter_for(out, ci=ci)
    scenario = Demo(Options(data_dir=data_dir, engine=chosen, simulated=simulated, ci=ci), report=reporter)

    def hold(result: Result) -> None:
        reporter.stop()  # the summary is printed normally, below the finished checklist
        _hold(result, data_dir)

    try:
        with reporter:
            result = scenario.run(hold=None if ci else hold)
    except DemoError as exc:
        raise CliError(str(exc), exit_code=1, hint=f"the logs are in {data_dir / 'logs'}") from exc
    problems = result.problems()
    if problems:
        raise CliError("the demo did not end as it should: " + "; ".join(problems), exit_code=1)
    err.print("demo: release 1.0.0 runs on every agent, 1.1.0 was rolled back where it reached, the rollout paused")

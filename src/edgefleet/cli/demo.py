"""`edgefleet demo`: the whole system on this machine, from an empty data dir to a rollout that stops a bad release."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.common import CliError, err, out
from edgefleet.demo.errors import DemoError
from edgefleet.demo.scenario import Demo, Options, Result


def _hold(result: Result) -> None:
    out.print(f"\nDashboard: {result.hub_url}/ui/  (log in with the admin token; the hub's certificate is")
    out.print("signed by the demo's own CA, DATA_DIR/hub/ca.crt, so the browser asks to trust it)")
    out.print(f"Hub: {result.hub_url}")
    out.print(f"Admin token: {result.token}")
    out.print("Everything keeps running; press Ctrl-C to stop it all and remove what the demo made.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    out.print("Stopping ...")


def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps everything (wiped by the next run)")] = Path(
        ".edgefleet/demo"
    ),
    simulated: Annotated[int, typer.Option(min=0, max=5000, help="Simulated devices beside the real agents")] = 0,
    ci: Annotated[bool, typer.Option("--ci", help="Check the end state and exit (non-interactive)")] = False,
) -> None:
    """Run the demo: hub, signed releases, three real agents on Podman, a rollout, and a bad release stopped."""
    scenario = Demo(
        Options(data_dir=data_dir, simulated=simulated, ci=ci), say=lambda line: out.print(line, markup=False)
    )
    try:
        result = scenario.run(hold=None if ci else _hold)
    except DemoError as exc:
        raise CliError(str(exc), exit_code=1, hint=f"the logs are in {data_dir / 'logs'}") from exc
    problems = result.problems()
    if problems:
        raise CliError("the demo did not end as it should: " + "; ".join(problems), exit_code=1)
    err.print("demo: release 1.0.0 runs on every agent, 1.1.0 was rolled back where it reached, the rollout paused")

"""`edgefleet sim`: a fleet of simulated devices for load tests and demos (real protocol, simulated engine)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from edgefleet.cli.common import EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE, CaFile, CliError
from edgefleet.sim.errors import EnrollmentRefusedError, SimAbortedError, SimSetupError
from edgefleet.sim.fleet import simulate
from edgefleet.sim.settings import MAX_DEVICES, SimSettings

FLAGS = {"hub_url": "--hub", "download_seconds": "--download-time", "start_seconds": "--start-time"}
FLAGS |= {"verify_workers": "--workers"}


def _settings(**values: Any) -> SimSettings:
    try:
        return SimSettings.model_validate({key: value for key, value in values.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first.get("loc", ("settings",))[0])
        flag = FLAGS.get(field, "--" + field.replace("_", "-"))
        raise CliError(f"{flag}: {first.get('msg', 'invalid')}", exit_code=EXIT_USAGE) from exc


def sim(
    devices: Annotated[int, typer.Option("--devices", min=1, max=MAX_DEVICES, help="How many devices to simulate")],
    hub: Annotated[str, typer.Option("--hub", envvar="EDGEFLEET_HUB", help="Hub URL, e.g. https://hub:8443")],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            help="ENROLLMENT token (`edgefleet token create --uses N`) for at least N devices, without approval",
            show_default=False,
        ),
    ],
    ca: CaFile = None,
    fail_rate: Annotated[float, typer.Option("--fail-rate", help="Share of updates that fail and roll back")] = 0.02,
    offline: Annotated[float, typer.Option("--offline", help="Share of devices offline in each period")] = 0.05,
    offline_period: Annotated[float, typer.Option("--offline-period", help="Seconds per offline period")] = 300.0,
    seed: Annotated[int, typer.Option("--seed", help="Fixes every random choice (failures, offline, timing)")] = 0,
    report_interval: Annotated[float, typer.Option("--report-interval", help="Seconds between state reports")] = 60.0,
    poll_wait: Annotated[float, typer.Option("--poll-wait", help="Seconds the hub may hold a target poll")] = 60.0,
    download_time: Annotated[
        float, typer.Option("--download-time", help="Mean simulated download time of an update (s)")
    ] = 5.0,
    start_time: Annotated[
        float, typer.Option("--start-time", help="Mean simulated start and health-check time (s)")
    ] = 2.0,
    duration: Annotated[float | None, typer.Option("--duration", help="Stop after this many seconds")] = None,
    summary_interval: Annotated[float, typer.Option("--summary-interval", help="Seconds between summaries")] = 10.0,
    ramp: Annotated[
        float, typer.Option("--ramp", help="Seconds over which devices enrolled before first connect")
    ] = 10.0,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Keep the devices' keys and state here (re-runs reuse them)")
    ] = None,
    arch: Annotated[str, typer.Option("--arch", help="Architecture the devices state")] = "amd64",
    policy: Annotated[Path | None, typer.Option("--policy", help="Device policy file (default: grant nothing)")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Worker processes for verification and enrollment")
    ] = None,
    max_connections: Annotated[
        int | None, typer.Option("--max-connections", help="Connections to the hub at most (default: fd limit)")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary at exit on stdout (the progress goes to stderr)")
    ] = False,
) -> None:
    """A SIMULATOR of N devices, for load tests and demos (not real devices).

    Each simulated device really enrolls with the hub and uses the agent's own protocol,
    signing and verification; its container engine is simulated: no container runs, no
    image is pulled. Stops on Ctrl-C (SIGINT), SIGTERM or after --duration.
    """
    settings = _settings(
        hub_url=hub,
        token=token,
        ca=ca,
        devices=devices,
        fail_rate=fail_rate,
        offline=offline,
        offline_period=offline_period,
        seed=seed,
        report_interval=report_interval,
        poll_wait=poll_wait,
        download_seconds=download_time,
        start_seconds=start_time,
        duration=duration,
        summary_interval=summary_interval,
        ramp=ramp,
        state_dir=state_dir,
        arch=arch,
        policy=policy,
        verify_workers=workers,
        max_connections=max_connections,
    )
    stream = sys.stderr if json_out else sys.stdout
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    try:
        summary = simulate(settings, out=say)
    except EnrollmentRefusedError as exc:
        raise CliError(str(exc), exit_code=EXIT_REFUSED) from exc
    except SimSetupError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    except SimAbortedError as exc:
        raise CliError(str(exc), exit_code=EXIT_FAILED) from exc
    if json_out:
        print(json.dumps(summary, indent=1), flush=True)

"""`edgefleet deploy create|preview|apply|list|status|pause|resume|abort`: deployments and their rollouts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
import yaml
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from edgefleet import selector
from edgefleet.cli.common import (
    EXIT_USAGE,
    CaFile,
    CliError,
    HubClient,
    HubUrl,
    JsonFlag,
    Token,
    out,
    print_json,
    print_table,
)
from edgefleet.cli.fleets import say
from edgefleet.protocol import MAX_STATUS_AGE_SECONDS
from edgefleet.rollout import MAX_PENDING

app = typer.Typer(help="Deployments: a release for the devices a tag selector targets, rolled out in waves.")
MAX_FILE_BYTES = 1024 * 1024
FINISHED = ("completed", "aborted", "rolled-back")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FILE_KEYS = {
    "name",
    "release",
    "target",
    "priority",
    "waves",
    "bake",
    "wave_timeout",
    "max_failure",
    "on_failure",
    "max_pending",
}

KeyArg = Annotated[str, typer.Argument(metavar="DEPLOYMENT", help="Deployment name or id")]
Release = Annotated[str, typer.Option("--release", metavar="APP@VERSION", help="The release to deploy")]
Target = Annotated[str, typer.Option("--target", help="Tag selector, e.g. 'fleet=f1 and env=prod and not lab'")]
Name = Annotated[str | None, typer.Option("--name", help="Unique name (default APP-VERSION)")]
Priority = Annotated[int, typer.Option("--priority", min=0, max=1_000_000, help="Highest wins where targets overlap")]
Waves = Annotated[str, typer.Option("--waves", help="Cumulative shares or counts, e.g. 1%,10%,50%,100%")]
Bake = Annotated[str, typer.Option("--bake", help="Hold after each wave, e.g. 10m (0 for none)")]
WaveTimeout = Annotated[str, typer.Option("--wave-timeout", help="How long a wave waits for its devices")]
MaxFailure = Annotated[str, typer.Option("--max-failure", help="Failure share of a wave that stops the rollout")]
OnFailure = Annotated[str, typer.Option("--on-failure", help="pause or rollback")]
MaxPending = Annotated[
    int | None,
    typer.Option(
        "--max-pending",
        min=1,
        max=MAX_PENDING,
        help="Pace: at most this many devices told and not yet downloading (default: each wave at once)",
    ),
]


def seconds(text: str | int, *, what: str) -> int:
    """'0', '90s', '10m', '2h', '1d' (or a number of seconds) -> seconds."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    raw = str(text).strip()
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in _UNITS else (raw, "s")
    if not number.isdigit() or len(number) > 7:
        raise CliError(f"bad {what} {text!r}", exit_code=EXIT_USAGE, hint="use e.g. 0, 90s, 10m, 2h, 1d")
    return int(number) * _UNITS[unit]


def body_of(
    *,
    name: str | None,
    release: str,
    target: str,
    priority: int,
    waves: str,
    bake: str | int,
    wave_timeout: str | int,
    max_failure: str,
    on_failure: str,
    max_pending: int | None = None,
) -> dict[str, Any]:
    """The API body of a deployment, checking locally what can be (the selector shows where it breaks)."""
    app_name, sep, version = release.partition("@")
    if not sep or not app_name or not version:
        raise CliError(f"bad release {release!r}", exit_code=EXIT_USAGE, hint="write APP@VERSION, e.g. sensor@1.2.0")
    try:
        selector.parse(target)
    except selector.SelectorError as exc:
        raise CliError(f"bad target: {exc}", exit_code=EXIT_USAGE, hint="\n" + exc.pointer()) from exc
    if on_failure not in ("pause", "rollback"):
        raise CliError(f"bad --on-failure {on_failure!r}", exit_code=EXIT_USAGE, hint="pause or rollback")
    if max_pending is not None and (
        isinstance(max_pending, bool) or not isinstance(max_pending, int) or not 1 <= max_pending <= MAX_PENDING
    ):
        raise CliError(f"bad max_pending {max_pending!r}", exit_code=EXIT_USAGE, hint=f"a number, 1 to {MAX_PENDING}")
    body: dict[str, Any] = {
        "app": app_name,
        "version": version,
        "target": target,
        "priority": priority,
        "waves": waves,
        "bake_seconds": seconds(bake, what="bake"),
        "wave_timeout_seconds": seconds(wave_timeout, what="wave timeout"),
        "max_failure": max_failure,
        "on_failure": on_failure,
    }
    if max_pending is not None:
        body["max_pending"] = max_pending
    if name is not None:
        body["name"] = name
    return body


@app.command("create")
def create(
    release: Release,
    target: Target,
    name: Name = None,
    priority: Priority = 0,
    waves: Waves = "100%",
    bake: Bake = "0",
    wave_timeout: WaveTimeout = "1h",
    max_failure: MaxFailure = "0%",
    on_failure: OnFailure = "pause",
    max_pending: MaxPending = None,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Create a deployment (audited); its first wave is assigned at once."""
    body = body_of(
        name=name,
        release=release,
        target=target,
        priority=priority,
        waves=waves,
        bake=bake,
        wave_timeout=wave_timeout,
        max_failure=max_failure,
        on_failure=on_failure,
        max_pending=max_pending,
    )
    result = HubClient(hub, token, ca).call("POST", "/deployments", body=body)
    if json_out:
        print_json(result)
        return
    say(f"deployment {result['name']} ({result['id']}): {result['app']}@{result['version']}, {result['state']}")


@app.command("preview")
def preview(
    release: Release,
    target: Target,
    name: Name = None,
    priority: Priority = 0,
    waves: Waves = "100%",
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000, help="Devices to list")] = 50,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """List the devices a deployment would reach, and in which wave, before creating it."""
    body = body_of(
        name=name,
        release=release,
        target=target,
        priority=priority,
        waves=waves,
        bake=0,
        wave_timeout=3600,
        max_failure="0%",
        on_failure="pause",
    )
    result = HubClient(hub, token, ca).call("POST", "/deployments/preview", body=body, params={"limit": limit})
    if json_out:
        print_json(result)
        return
    say(f"{result['total']} devices; waves reach {', '.join(str(r) for r in result['reach'])}")
    for kept_by, count in sorted(result["kept_by"].items()):
        say(f"{count} kept by higher-priority deployment {kept_by}")
    if result["incompatible"]:
        say(f"{result['incompatible']} selected devices have no image for their architecture")
    print_table(result["devices"], ("device_id", "wave"))


@app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="YAML with a list under `deployments:`")],
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Create or update the deployments a file declares, all or none; the same file again changes nothing."""
    bodies = read_file(path)
    result = HubClient(hub, token, ca).call("POST", "/deployments/apply", body={"deployments": bodies})
    if json_out:
        print_json(result)
        return
    for item in result["results"]:
        say(f"{item['name']}: {item['outcome']}")


def read_file(path: Path) -> list[dict[str, Any]]:
    """The API bodies of a deployments file; every problem is a usage error naming the entry."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CliError(f"{path} is larger than {MAX_FILE_BYTES} bytes", exit_code=EXIT_USAGE)
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=EXIT_USAGE) from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CliError(f"{path} is not valid YAML: {' '.join(str(exc).split())[:200]}", exit_code=EXIT_USAGE) from exc
    entries = document.get("deployments") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise CliError(f"{path} has no list under `deployments:`", exit_code=EXIT_USAGE, hint="see docs/deployments.md")
    bodies = []
    for index, entry in enumerate(entries, start=1):
        where = f"{path}: deployment {index}"
        if not isinstance(entry, dict):
            raise CliError(f"{where} is not a mapping", exit_code=EXIT_USAGE)
        unknown = set(entry) - _FILE_KEYS
        if unknown:
            raise CliError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r}", exit_code=EXIT_USAGE)
        for key in ("name", "release", "target"):
            if not isinstance(entry.get(key), str):
                raise CliError(f"{where}: `{key}` is required (text)", exit_code=EXIT_USAGE)
        priority = entry.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise CliError(f"{where}: `priority` is a whole number", exit_code=EXIT_USAGE)
        try:
            bodies.append(
                body_of(
                    name=entry["name"],
                    release=entry["release"],
                    target=entry["target"],
                    priority=priority,
                    waves=str(entry.get("waves", "100%")),
                    bake=entry.get("bake", 0),
                    wave_timeout=entry.get("wave_timeout", "1h"),
                    max_failure=str(entry.get("max_failure", "0%")),
                    on_failure=str(entry.get("on_failure", "pause")),
                    max_pending=entry.get("max_pending"),
                )
            )
        except CliError as exc:
            raise CliError(f"{where} ({entry['name']}): {exc.message}", exit_code=EXIT_USAGE, hint=exc.hint) from exc
    return bodies


@app.command("list")
def list_deployments(
    app_name: Annotated[str | None, typer.Option("--app", help="Only this app's")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 1000,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """List deployments, oldest first."""
    rows = HubClient(hub, token, ca).call("GET", "/deployments", params={"app": app_name, "limit": limit})["items"]
    if json_out:
        print_json(rows)
        return
    print_table(
        [{**r, "release": f"{r['app']}@{r['version']}"} for r in rows],
        ("name", "release", "target", "priority", "waves", "state", "wave"),
    )


def _status_table(status: dict[str, Any]) -> Table:
    deployment = status["deployment"]
    title = (
        f"{deployment['name']}: {deployment['app']}@{deployment['version']} {deployment['state']}"
        f", wave {deployment['wave']} of {len(status['waves'])}, {status['targeted']} devices targeted"
    )
    if deployment["reason"]:
        title += f"\n{deployment['reason']}"
    table = Table(title=title)
    columns = ("wave", "reach", "size", "pending", "downloading", "updated", "failed", "offline", "restored")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("progress")
    for wave in status["waves"]:
        table.add_row(*(str(wave[c]) for c in columns), _wave_bar(wave))
    return table


def _wave_bar(wave: dict[str, Any]) -> Table:
    """The wave's updated devices of its size as a bar and a percentage (an empty wave shows 0 %)."""
    size, updated = int(wave["size"]), int(wave["updated"])
    percent = updated * 100 // size if size else 0
    bar = ProgressBar(total=max(size, 1), completed=updated, width=20)
    cell = Table.grid(padding=(0, 1))
    cell.add_row(bar, f"{percent:>3d} %")
    return cell


@app.command("status")
def status(
    key: KeyArg,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the rollout finishes (Ctrl-C to stop)")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.5, max=600, help="Seconds between refreshes")] = 2.0,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Show a deployment and, per wave, its devices pending, downloading, updated, failed and offline."""
    client = HubClient(hub, token, ca)
    path = f"/deployments/{quote(key, safe='')}"
    result = client.call("GET", path)
    if json_out:
        print_json(result)
        return
    if not watch:
        out.print(_status_table(result))
        return
    # A live view: the hub may answer with a status it computed for another viewer since the last refresh.
    live_params = {"max_age": min(interval, MAX_STATUS_AGE_SECONDS)}
    with Live(_status_table(result), console=out, auto_refresh=False) as live:
        while result["deployment"]["state"] not in FINISHED:
            time.sleep(interval)
            result = client.call("GET", path, params=live_params)
            live.update(_status_table(result), refresh=True)


def _transition(verb: str, key: str, hub: str | None, token: str | None, ca: Path | None, body: dict[str, Any]) -> None:
    result = HubClient(hub, token, ca).call("POST", f"/deployments/{quote(key, safe='')}/{verb}", body=body)
    reason = f" ({result['reason']})" if result["reason"] else ""
    say(f"deployment {result['name']}: {result['state']}{reason}")


@app.command("pause")
def pause(key: KeyArg, hub: HubUrl = None, token: Token = None, ca: CaFile = None) -> None:
    """Hold a rollout: nothing more is assigned until it is resumed (audited)."""
    _transition("pause", key, hub, token, ca, {})


@app.command("resume")
def resume(key: KeyArg, hub: HubUrl = None, token: Token = None, ca: CaFile = None) -> None:
    """Continue a paused rollout; the current wave's failures so far are accepted (audited)."""
    _transition("resume", key, hub, token, ca, {})


@app.command("abort")
def abort(
    key: KeyArg,
    rollback: Annotated[bool, typer.Option("--rollback", help="Give its devices their previous release")] = False,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
) -> None:
    """Stop a rollout for good (audited); devices keep what they have unless --rollback."""
    _transition("abort", key, hub, token, ca, {"rollback": rollback})

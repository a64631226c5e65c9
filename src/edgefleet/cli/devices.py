"""`edgefleet device list|show|tag|accept|reject|revoke|assign|retry|why|assignments|env`: the device registry."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from edgefleet.cli.common import (
    EXIT_USAGE,
    CaFile,
    CliError,
    HubClient,
    HubUrl,
    JsonFlag,
    Token,
    out,
    parse_tags,
    print_json,
    print_table,
)
from edgefleet.cli.fleets import env_commands, say

app = typer.Typer(help="Devices in the registry.", no_args_is_help=True)
COLUMNS = ("id", "fleet", "status", "arch", "tags", "last_seen_at")
DeviceArg = Annotated[str, typer.Argument(metavar="ID", help="Device UUID")]


@app.command("list")
def list_devices(
    fleet: Annotated[str | None, typer.Option("--fleet")] = None,
    status: Annotated[str | None, typer.Option("--status", help="pending, accepted, rejected or revoked")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 1000,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """List devices, following pages up to --limit."""
    client = HubClient(hub, token, ca)
    rows: list[dict[str, object]] = []
    after = None
    while len(rows) < limit:
        page = client.call(
            "GET",
            "/devices",
            params={"fleet": fleet, "status": status, "after": after, "limit": min(1000, limit - len(rows))},
        )
        rows.extend(page["items"])
        after = page["next_after"]
        if after is None:
            break
    print_json(rows) if json_out else print_table(rows, COLUMNS)


@app.command("show")
def show(
    device_id: DeviceArg, hub: HubUrl = None, token: Token = None, ca: CaFile = None, json_out: JsonFlag = False
) -> None:
    """Show one device: its record, each app's assigned and reported release, its last error, its update outcomes."""
    client = HubClient(hub, token, ca)
    device = client.call("GET", f"/devices/{quote(device_id, safe='')}")
    state = client.call("GET", f"/devices/{quote(device_id, safe='')}/state")
    if json_out:
        keys = ("apps", "environment", "last_error", "updates", "reported")
        print_json({**device, **{key: state[key] for key in keys}})
        return
    for key, value in device.items():
        _say(f"{key + ':':18} {_cell(value)}")
    _say(f"{'environment:':18} {', '.join(state['environment']) or '-'}")
    _say("apps (desired -> reported):")
    if not state["apps"]:
        _say("  (none assigned or reported)")
    width = max((len(app["app"]) for app in state["apps"]), default=0)
    for app_state in state["apps"]:
        mark = "ok" if app_state["in_sync"] else "differs"
        desired, reported = app_state["desired"] or "-", app_state["reported"] or "-"
        services = _services(app_state["services"])
        line = f"  {app_state['app'].ljust(width)}  {desired} -> {reported}  [{mark}]"
        _say(f"{line}  {services}" if services else line)
    if state["last_error"] is not None:
        _say(f"{'last_error:':18} {_cell(state['last_error'])}")
    if state["updates"]:
        _say("updates (latest per app):")
    for app_name, update in state["updates"].items():
        _say(f"  {_update_line(app_name, update)}")
        for line in (update["logs"] or "").splitlines()[-LOG_LINES:]:
            _say(f"    | {line}")
    _say(f"{'image root:':18} {ROOT_TRUST.get(str(state['reported'].get('repository_root')), ROOT_TRUST['None'])}")
    others = {k: v for k, v in state["reported"].items() if k not in ("apps", "last_error", "repository_root")}
    for key, value in others.items():
        _say(f"{'reported.' + key + ':':18} {_cell(value)}")


ROOT_TRUST = {
    "pinned": "pinned (the publisher's root, provisioned with the device)",
    "first-use": "NOT PINNED: taken from the hub on first use (--trust-first-root)",
    "None": "not reported (an agent from before root pinning)",
}
"""How `device show` marks the way a device came to trust the image repository's root (reported by the agent)."""
LOG_LINES = 10
"""Log lines `device show` prints per update outcome (`--json` has all the device sent)."""
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _say(text: str) -> None:
    """Print a line of `device show`: much of it is device-written, so no control character reaches the terminal."""
    say(_printable(text))


def _printable(text: str) -> str:
    """One line of device-written text without control characters (a log's escape codes must not drive the terminal)."""
    return _CONTROL.sub("?", text)


def _update_line(app_name: str, update: dict[str, object]) -> str:
    """`APP  STATUS  FROM -> TO  at TIME  SERVICE: REASON`."""
    line = f"{app_name}  {update['status']}  {update['from_release'] or '-'} -> {update['to_release']}"
    service, reason = update["service"], str(update["reason"] or "")
    if service and reason.startswith(f"{service}: "):
        service = None  # the agent's reason already names its service
    why = ": ".join(str(part) for part in (service, reason) if part)
    return _printable(f"{line}  at {update['at']}  {why}".rstrip())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _services(services: dict[str, object]) -> str:
    """`name: state (health, N restarts)` per service, from what the device reported (control characters shown as ?)."""
    parts = []
    for name, status in services.items():
        if isinstance(status, dict):
            details = [str(status["health"])] if status.get("health") else []
            if isinstance(status.get("restarts"), int):
                details.append(f"{status['restarts']} restarts")
            status = f"{status.get('state') or '?'}" + (f" ({', '.join(details)})" if details else "")
        parts.append(f"{name}: {status}")
    return _printable("; ".join(parts))


@app.command("tag")
def tag(
    device_id: DeviceArg,
    tags: Annotated[list[str] | None, typer.Argument(metavar="KEY=VALUE...", help="Tags to set")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Tag key to remove (repeatable)")] = None,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Set tags (KEY=VALUE) and remove tags (--remove KEY) on a device."""
    body = {"set": parse_tags(tags or []), "remove": list(remove or [])}
    device = HubClient(hub, token, ca).call("PATCH", f"/devices/{device_id}/tags", body=body)
    print_json(device) if json_out else out.print(f"{device['id']}: {device['tags']}")


def _decide(verb: str, device_id: str, hub: str | None, token: str | None, ca: Path | None) -> None:
    device = HubClient(hub, token, ca).call("POST", f"/devices/{device_id}/{verb}")
    out.print(f"{device['id']}: {device['status']}")


@app.command("accept")
def accept(device_id: DeviceArg, hub: HubUrl = None, token: Token = None, ca: CaFile = None) -> None:
    """Accept a pending device: its certificate is issued."""
    _decide("accept", device_id, hub, token, ca)


@app.command("reject")
def reject(device_id: DeviceArg, hub: HubUrl = None, token: Token = None, ca: CaFile = None) -> None:
    """Reject a pending device."""
    _decide("reject", device_id, hub, token, ca)


@app.command("revoke")
def revoke(device_id: DeviceArg, hub: HubUrl = None, token: Token = None, ca: CaFile = None) -> None:
    """Revoke a device: its next request is refused."""
    _decide("revoke", device_id, hub, token, ca)


@app.command("assign")
def assign(
    device_id: DeviceArg,
    release: Annotated[str, typer.Argument(metavar="APP@VERSION")],
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback",
            help="Sign it as a rollback: needed for a release older than the assigned one, "
            "or than the one the device ran before the app was unassigned",
        ),
    ] = False,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
) -> None:
    """Set what one app on the device runs (audited); the director tells only that device."""
    app_name, sep, version = release.partition("@")
    if not sep or not app_name or not version:
        raise CliError(f"bad release {release!r}", exit_code=EXIT_USAGE, hint="write APP@VERSION, e.g. sensor@1.2.0")
    body = {"app": app_name, "version": version, "rollback": rollback}
    result = HubClient(hub, token, ca).call("POST", f"/devices/{device_id}/assignments", body=body)
    marker = " (rollback)" if result["rollback"] else ""
    out.print(f"{device_id}: {result['app']} -> {result['version']}{marker}")


@app.command("retry")
def retry(
    device_id: DeviceArg,
    app_name: Annotated[str | None, typer.Option("--app", help="Only this app (default: every assigned app)")] = None,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Have the device try its assigned release again, even one that failed there (audited)."""
    body = {} if app_name is None else {"app": app_name}
    rows = HubClient(hub, token, ca).call("POST", f"/devices/{quote(device_id, safe='')}/retry", body=body)
    if json_out:
        print_json(rows)
        return
    for row in rows:
        say(f"{device_id}: {row['app']}@{row['version']} retry {row['retry']}: the device tries it again")


@app.command("why")
def why(
    device_id: DeviceArg, hub: HubUrl = None, token: Token = None, ca: CaFile = None, json_out: JsonFlag = False
) -> None:
    """Explain, per app, which deployment (or operator) put the device on its release."""
    result = HubClient(hub, token, ca).call("GET", f"/devices/{quote(device_id, safe='')}/why")
    if json_out:
        print_json(result)
        return
    if not result["apps"]:
        say("no app is assigned to this device, and no deployment selects it")
    for entry in result["apps"]:
        say(f"{entry['app']}: {entry['explanation']}")


@app.command("assignments")
def assignments(
    device_id: DeviceArg, hub: HubUrl = None, token: Token = None, ca: CaFile = None, json_out: JsonFlag = False
) -> None:
    """What each app on the device must run."""
    rows = HubClient(hub, token, ca).call("GET", f"/devices/{device_id}/assignments")
    if json_out:
        print_json(rows)
        return
    print_table(rows, ("app", "version", "release_counter", "rollback", "retry", "assigned_by", "assigned_at"))


app.add_typer(
    env_commands(noun="device", metavar="ID", path=lambda device: f"/devices/{quote(device, safe='')}/environment"),
    name="env",
)

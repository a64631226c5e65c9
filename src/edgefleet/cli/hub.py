"""`edgefleet hub init|serve|up`: create a hub's data dir and run the hub over HTTPS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from edgefleet.cli.common import EXIT_UNAVAILABLE, EXIT_USAGE, CliError, err, out
from edgefleet.hub.errors import HubError
from edgefleet.hub.lifecycle import InitResult, init_hub, serve
from edgefleet.hub.settings import HubSettings

app = typer.Typer(help="Create and run a hub.", no_args_is_help=True)

DataDir = Annotated[Path, typer.Option("--data-dir", help="Hub data dir (keys, certificates, SQLite store)")]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="EDGEFLEET_DATABASE_URL", help="PostgreSQL URL; SQLite in the data dir when unset"
    ),
]
Bind = Annotated[str, typer.Option("--bind", help="HOST:PORT to listen on")]
Hostnames = Annotated[
    list[str] | None, typer.Option("--hostname", help="Name devices use to reach the hub (repeatable)")
]


def _settings(data_dir: Path, database_url: str | None) -> HubSettings:
    try:
        return HubSettings(data_dir=data_dir.resolve(), database_url=database_url)
    except ValidationError as exc:
        raise CliError(f"bad hub settings: {exc.errors()[0]['msg']}", exit_code=EXIT_USAGE) from exc


def _bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"bad --bind {bind!r}", exit_code=EXIT_USAGE, hint="use HOST:PORT, e.g. 0.0.0.0:8443")
    return host.strip("[]") or "0.0.0.0", int(port)


def _init(settings: HubSettings, hostnames: tuple[str, ...]) -> InitResult:
    try:
        return init_hub(settings, hostnames=hostnames)
    except HubError as exc:
        raise CliError(exc.message, exit_code=EXIT_UNAVAILABLE) from exc


def _print_init(result: InitResult) -> None:
    out.print(f"data dir:    {result.data_dir}")
    out.print(f"CA:          {result.ca_path}")
    out.print(f"database:    {result.database}")
    out.print(f"admin token: {result.admin_token}")
    err.print("The admin token is shown only now; it is stored hashed. Keep it safe.")


def _serve(settings: HubSettings, bind: str) -> None:
    host, port = _bind(bind)
    try:
        serve(settings, host=host, port=port)
    except HubError as exc:
        raise CliError(exc.message, exit_code=EXIT_UNAVAILABLE) from exc


@app.command("init")
def init_command(data_dir: DataDir, hostname: Hostnames = None, database_url: DatabaseUrl = None) -> None:
    """Create the fleet CA, the hub's TLS certificate, online signing keys and a first admin token."""
    _print_init(_init(_settings(data_dir, database_url), tuple(hostname or ())))


@app.command("serve")
def serve_command(data_dir: DataDir, bind: Bind = "127.0.0.1:8443", database_url: DatabaseUrl = None) -> None:
    """Serve the hub API over HTTPS; migrations are applied at start."""
    _serve(_settings(data_dir, database_url), bind)


@app.command("up")
def up_command(
    data_dir: DataDir = Path(".edgefleet/hub"),
    bind: Bind = "127.0.0.1:8443",
    hostname: Hostnames = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Initialise a hub if DATA_DIR is new, print how to reach it, and serve it."""
    settings = _settings(data_dir, database_url)
    if (settings.data_dir / "ca.key").exists():
        err.print("Using the existing data dir; its admin token was printed when it was created.")
    else:
        _print_init(_init(settings, tuple(hostname or ())))
    host, port = _bind(bind)
    shown = "localhost" if host in ("0.0.0.0", "127.0.0.1", "::") else host
    out.print(f"hub URL:     https://{shown}:{port}")
    out.print(
        f"try:         edgefleet device list --hub https://{shown}:{port} "
        f"--ca {settings.data_dir / 'ca.crt'} --token <admin token>"
    )
    out.print("stop with Ctrl-C")
    _serve(settings, bind)

"""`edgefleet hub init|serve|up|keys rotate`: create a hub's data dir, run the hub over HTTPS, rotate its keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from edgefleet.cli.common import EXIT_UNAVAILABLE, EXIT_USAGE, CliError, JsonFlag, err, out, print_json
from edgefleet.hub.datadir import ONLINE_ROLES
from edgefleet.hub.errors import HubError
from edgefleet.hub.lifecycle import InitResult, init_hub, serve
from edgefleet.hub.rotation import rotate_keys
from edgefleet.hub.settings import HubSettings

app = typer.Typer(help="Create and run a hub.", no_args_is_help=True)
keys_app = typer.Typer(help="The hub's online signing keys (director, snapshot, timestamp).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

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


Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        max=64,
        help="Processes serving the API on one port (PostgreSQL only; about one per core)",
    ),
]


def _serve(settings: HubSettings, bind: str, workers: int = 1) -> None:
    host, port = _bind(bind)
    if workers > 1 and not settings.sqlalchemy_url().startswith("postgresql"):
        raise CliError(
            "SQLite serves one process: --workers needs PostgreSQL",
            exit_code=EXIT_USAGE,
            hint="pass --database-url postgresql://... (or leave --workers at 1)",
        )
    try:
        serve(settings, host=host, port=port, workers=workers)
    except HubError as exc:
        raise CliError(exc.message, exit_code=EXIT_UNAVAILABLE) from exc


@app.command("init")
def init_command(data_dir: DataDir, hostname: Hostnames = None, database_url: DatabaseUrl = None) -> None:
    """Create the fleet CA, the hub's TLS certificate, online signing keys and a first admin token."""
    _print_init(_init(_settings(data_dir, database_url), tuple(hostname or ())))


@app.command("serve")
def serve_command(
    data_dir: DataDir, bind: Bind = "127.0.0.1:8443", database_url: DatabaseUrl = None, workers: Workers = 1
) -> None:
    """Serve the hub API over HTTPS; migrations are applied at start."""
    _serve(_settings(data_dir, database_url), bind, workers)


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


@keys_app.command("rotate")
def keys_rotate_command(
    data_dir: DataDir,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="director, snapshot or timestamp (repeatable)")
    ] = None,
    all_roles: Annotated[bool, typer.Option("--all", help="Rotate all three")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Replace online signing keys in the data dir (offline); the old ones move to keys/retired/.

    Every hub process using the data dir must be restarted to load the new keys. The director
    root is then rotated by the hub itself; for snapshot and timestamp the publisher runs
    `edgefleet repo rotate-online-keys`, and until then the hub keeps signing with the old keys.
    """
    if bool(role) == all_roles:
        raise CliError(
            "give --role (once per role) or --all", exit_code=EXIT_USAGE, hint="e.g. --role snapshot --role timestamp"
        )
    roles = list(ONLINE_ROLES) if all_roles else list(role or ())
    unknown = sorted(set(roles) - set(ONLINE_ROLES))
    if unknown:
        raise CliError(f"unknown role {unknown[0]!r}", exit_code=EXIT_USAGE, hint="use director, snapshot or timestamp")
    try:
        done = rotate_keys(data_dir.resolve(), roles)
    except HubError as exc:
        raise CliError(exc.message, exit_code=EXIT_UNAVAILABLE) from exc
    if json_out:
        print_json(
            {
                "resumed": done.resumed,
                "keys": [{"role": k.role, "keyid": k.keyid, "retired_keyid": k.retired_keyid} for k in done.keys],
            }
        )
    else:
        if done.resumed:
            err.print("Finished a rotation an earlier run had started.")
        for key in done.keys:
            out.print(f"{key.role + ':':10} new key {key.keyid}  (replaced {key.retired_keyid}, kept in keys/retired/)")
    rotated = {key.role for key in done.keys}
    err.print("Next: restart every hub process that uses this data dir (all replicas) to load the new keys.")
    if rotated & {"snapshot", "timestamp"}:
        err.print(
            "Then the publisher names the new keys in the image repository's root: "
            "edgefleet repo rotate-online-keys --keys KEYS (until then the hub signs with the old ones)."
        )
    if "director" in rotated:
        err.print("The restarted hub signs the next director root with the old and the new director key by itself.")

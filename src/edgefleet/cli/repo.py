"""`edgefleet repo init`: start the hub's image repository with a root signed by the publisher's offline keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from securesystemslib.signer import Key

from edgefleet.cli.common import EXIT_USAGE, CaFile, CliError, HubClient, HubUrl, Token, out, parse_duration
from edgefleet.publisher.errors import KeyStoreError, PublisherError
from edgefleet.publisher.keys import key_from_wire, load_index, load_signers
from edgefleet.publisher.metadata import make_root, sign_root
from edgefleet.publisher.state import ROOT, save_root
from edgefleet.releases import root_digest

app = typer.Typer(help="The hub's image repository (publisher side).", no_args_is_help=True)


def online_keys(client: HubClient) -> dict[str, Key]:
    raw = client.call("GET", "/repository/online-keys")
    try:
        return {role: key_from_wire(data) for role, data in raw.items()}
    except (KeyStoreError, AttributeError) as exc:
        raise CliError(f"the hub sent unusable online keys: {exc}") from exc


@app.command("init")
def init(
    keys: Annotated[Path, typer.Option("--keys", help="Publisher key directory (edgefleet keys init)")],
    expires: Annotated[str, typer.Option("--expires", help="Root lifetime, e.g. 365d")] = "365d",
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
) -> None:
    """Sign root version 1 with the publisher's root keys, naming the hub's online keys, and push it (admin)."""
    client = HubClient(hub, token, ca)
    online = online_keys(client)
    try:
        metadata = make_root(
            load_index(keys), online, now=datetime.now(UTC), lifetime=timedelta(seconds=parse_duration(expires))
        )
        signed = sign_root(metadata, load_signers(keys, "root"))
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    accepted = client.call("POST", "/repository/root", body=signed.to_dict())
    save_root(keys, signed)
    out.print(f"image repository root version {accepted['version']} accepted; expires {accepted['expires']}")
    out.print(f"devices pin it with repository_root = {keys / ROOT} (copy it to the device image)")
    out.print(f"  or repository_root_sha256 = {root_digest(signed.to_bytes())}")

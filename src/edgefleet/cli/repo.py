"""`edgefleet repo init|rotate-online-keys`: the image repository's root, signed by the publisher's offline keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from securesystemslib.signer import Key
from tuf.api.metadata import Metadata, Root

from edgefleet.cli.common import (
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CaFile,
    CliError,
    HubClient,
    HubUrl,
    JsonFlag,
    Token,
    err,
    out,
    parse_duration,
    print_json,
)
from edgefleet.publisher.errors import AnswerLostError, KeyStoreError, PublisherError
from edgefleet.publisher.keys import key_from_wire, load_index, load_signers
from edgefleet.publisher.metadata import make_root, sign_root
from edgefleet.publisher.online import name_online_keys
from edgefleet.publisher.rotation import PushRefusedError
from edgefleet.publisher.state import ROOT, load_root, save_root
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


def _hub_root(client: HubClient) -> Metadata[Root] | None:
    """The hub's newest root, or None when it has none or sends something unusable (it is only a hint)."""
    try:
        return Metadata[Root].from_dict(client.call("GET", "/repository/root"))
    except CliError as exc:
        if exc.exit_code == EXIT_REFUSED:
            return None
        raise
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@app.command("rotate-online-keys")
def rotate_online_keys(
    keys: Annotated[Path, typer.Option("--keys", help="Publisher key directory (edgefleet keys init)")],
    expires: Annotated[str, typer.Option("--expires", help="Lifetime of the new root, e.g. 365d")] = "365d",
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Sign and push the next root naming the hub's current snapshot and timestamp keys (admin).

    The publisher's part of `edgefleet hub keys rotate`: devices then trust the hub's new keys and
    drop what the replaced ones signed. Nothing is pushed when the last root already names them.
    """
    lifetime = timedelta(seconds=parse_duration(expires))
    try:
        load_root(keys)  # local input first: a key directory without a repository fails before the network
        load_signers(keys, "root")
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE, hint="run it with the key directory of `repo init`") from exc
    client = HubClient(hub, token, ca)
    online = online_keys(client)
    hub_root = _hub_root(client)

    def push(kind: str, body: dict[str, Any]) -> None:
        try:
            client.call("POST", f"/repository/{kind}", body=body)
        except CliError as exc:
            if exc.exit_code == EXIT_REFUSED:
                raise PushRefusedError(exc.message) from exc
            raise

    try:
        done = name_online_keys(keys, online, push, now=datetime.now(UTC), hub_root=hub_root, lifetime=lifetime)
    except PushRefusedError as exc:
        refusal = exc.__cause__
        raise refusal if isinstance(refusal, CliError) else CliError(str(exc), exit_code=EXIT_REFUSED) from exc
    except AnswerLostError as exc:
        raise CliError(str(exc), exit_code=EXIT_UNAVAILABLE) from exc
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    if json_out:
        print_json({"root_version": done.root_version, "keyids": done.keyids, "outcome": done.outcome})
        return
    named = f"snapshot key {done.keyids['snapshot']} and timestamp key {done.keyids['timestamp']}"
    if done.outcome == "unchanged":
        out.print(f"root version {done.root_version} already names the hub's {named}; nothing to do")
        return
    how = "accepted" if done.outcome == "pushed" else "already held by the hub (recorded now)"
    out.print(f"root version {done.root_version} names the hub's {named}: {how}")
    err.print("Devices trust these keys from their next update on, and drop what the replaced keys signed.")

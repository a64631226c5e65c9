"""`edgefleet keys init`: the publisher's offline root and targets keys for the image repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.common import EXIT_USAGE, CliError, JsonFlag, out, print_json
from edgefleet.publisher.errors import KeyStoreError
from edgefleet.publisher.keys import KeyType, init_keys

app = typer.Typer(help="Publisher keys (kept offline; the hub never sees them).", no_args_is_help=True)


@app.command("init")
def init(
    directory: Annotated[Path, typer.Option("--dir", help="New directory for the keys")],
    threshold: Annotated[int, typer.Option("--threshold", min=1, help="Signatures needed per role")] = 1,
    count: Annotated[int | None, typer.Option("--keys", min=1, help="Keys per role (default: the threshold)")] = None,
    key_type: Annotated[str, typer.Option("--type", help="ed25519 or ecdsa")] = "ed25519",
    json_out: JsonFlag = False,
) -> None:
    """Create root and targets keys (private files mode 0600) and keys.json with the public keys."""
    if key_type not in ("ed25519", "ecdsa"):
        raise CliError(f"unknown key type {key_type!r}", exit_code=EXIT_USAGE, hint="use ed25519 or ecdsa")
    chosen: KeyType = "ed25519" if key_type == "ed25519" else "ecdsa"
    try:
        roles = init_keys(directory, threshold=threshold, count=count, key_type=chosen)
    except KeyStoreError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    summary = {
        role: {"threshold": keys.threshold, "keyids": [k.keyid for k in keys.keys]} for role, keys in roles.items()
    }
    if json_out:
        print_json(summary)
        return
    for role, keys in roles.items():
        keyids = [k.keyid for k in keys.keys]
        out.print(f"{role}: threshold {keys.threshold} of {len(keyids)}: {', '.join(keyids)}")
    out.print(f"private keys are in {directory} (mode 0600); keep them offline")

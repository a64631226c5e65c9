"""`edgefleet keys init|rotate|root-digest`: the publisher's offline root and targets keys for the image repository."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

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
    out,
    parse_duration,
    print_json,
)
from edgefleet.publisher.errors import KeyStoreError, PublisherError
from edgefleet.publisher.keys import ROLES, KeyType, Role, init_keys
from edgefleet.publisher.rotation import PushRefusedError, rotate
from edgefleet.publisher.state import load_root
from edgefleet.releases import root_digest

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
    try:
        roles = init_keys(directory, threshold=threshold, count=count, key_type=_key_type(key_type))
    except KeyStoreError as exc:  # a disk that cannot take the keys is unusable local configuration, not usage
        code = EXIT_UNAVAILABLE if isinstance(exc.__cause__, OSError) else EXIT_USAGE
        raise CliError(str(exc), exit_code=code) from exc
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


def _key_type(text: str) -> KeyType:
    if text not in ("ed25519", "ecdsa"):
        raise CliError(f"unknown key type {text!r}", exit_code=EXIT_USAGE, hint="use ed25519 or ecdsa")
    return "ed25519" if text == "ed25519" else "ecdsa"


@app.command("rotate")
def rotate_command(
    directory: Annotated[Path, typer.Option("--dir", help="The publisher key directory")],
    role: Annotated[str, typer.Option("--role", help="root or targets")],
    threshold: Annotated[int, typer.Option("--threshold", min=1, help="Signatures needed with the new keys")] = 1,
    count: Annotated[int | None, typer.Option("--keys", min=1, help="New keys (default: the threshold)")] = None,
    key_type: Annotated[str, typer.Option("--type", help="ed25519 or ecdsa")] = "ed25519",
    expires: Annotated[str, typer.Option("--expires", help="Lifetime of the new root, e.g. 365d")] = "365d",
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
) -> None:
    """Replace the keys of a role: new root signed by the old root threshold and the new keys, pushed (admin).

    For targets, the current targets are then re-signed with the new keys and pushed. Old
    private keys move to DIR/retired/; devices that trust the old root follow the rotation.
    """
    if role not in ROLES:
        raise CliError(f"unknown role {role!r}", exit_code=EXIT_USAGE, hint="use root or targets")
    chosen: Role = "root" if role == "root" else "targets"
    lifetime = timedelta(seconds=parse_duration(expires))
    client = HubClient(hub, token, ca)

    def push(kind: str, body: dict[str, Any]) -> None:
        try:
            client.call("POST", f"/repository/{kind}", body=body)
        except CliError as exc:
            if exc.exit_code == EXIT_REFUSED:
                raise PushRefusedError(exc.message) from exc
            raise

    try:
        done = rotate(
            directory,
            chosen,
            push,
            now=datetime.now(UTC),
            threshold=threshold,
            count=count,
            key_type=_key_type(key_type),
            lifetime=lifetime,
        )
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    out.print(f"root version {done.root_version} now trusts {len(done.keys.keys)} new {chosen} key(s)")
    if done.targets_version is not None:
        out.print(f"targets version {done.targets_version} re-signed with the new keys")


@app.command("root-digest")
def root_digest_command(
    directory: Annotated[Path, typer.Option("--dir", help="The publisher key directory")],
    json_out: JsonFlag = False,
) -> None:
    """Print the digest of the repository root this key directory last pushed, for devices to pin.

    Devices given it (``repository_root_sha256`` in their config, or ``--repository-root-sha256``)
    trust only that root at their first start, whatever a hub says.
    """
    try:
        root = load_root(directory)
        digest = root_digest(root.to_bytes())
    except (KeyStoreError, ValueError) as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE, hint="run edgefleet repo init with this key directory") from exc
    if json_out:
        print_json({"version": root.signed.version, "sha256": digest})
        return
    out.print(f"repository_root_sha256 = {digest}   # root version {root.signed.version}")

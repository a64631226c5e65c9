"""`edgefleet keys init|rotate|root-digest|delegate|revoke-delegation|delegations`: publisher and team keys."""

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
    print_table,
)
from edgefleet.publisher.delegation import delegate, delegations, revoke
from edgefleet.publisher.errors import KeyStoreError, PublisherError
from edgefleet.publisher.keys import (
    INDEX,
    ROLES,
    KeyType,
    Role,
    RoleKeys,
    init_delegated_keys,
    init_keys,
    team_keys,
)
from edgefleet.publisher.rotation import PushRefusedError, rotate
from edgefleet.publisher.state import load_root, restore_targets_record, targets_record
from edgefleet.releases import root_digest

app = typer.Typer(help="Publisher keys (kept offline; the hub never sees them).", no_args_is_help=True)


@app.command("init")
def init(
    directory: Annotated[Path, typer.Option("--dir", help="New directory for the keys")],
    threshold: Annotated[int, typer.Option("--threshold", min=1, help="Signatures needed per role")] = 1,
    count: Annotated[int | None, typer.Option("--keys", min=1, help="Keys per role (default: the threshold)")] = None,
    key_type: Annotated[str, typer.Option("--type", help="ed25519 or ecdsa")] = "ed25519",
    delegated: Annotated[
        str | None,
        typer.Option("--delegated", metavar="ROLE", help="A team's keys for this delegated role, not root and targets"),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Create root and targets keys (or, with --delegated, a team's keys) and keys.json with the public keys."""
    chosen = _key_type(key_type)
    try:
        roles: dict[str, RoleKeys]
        if delegated is None:
            made = init_keys(directory, threshold=threshold, count=count, key_type=chosen)
            roles = {str(role): keys for role, keys in made.items()}
        else:
            roles = {
                delegated: init_delegated_keys(directory, delegated, threshold=threshold, count=count, key_type=chosen)
            }
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
    if delegated is not None:
        out.print(
            f"hand {directory / INDEX} (public keys only) to the targets key holders: "
            f"edgefleet keys delegate {delegated} --team-keys keys.json --app APP --dir KEYS"
        )


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


Expires = Annotated[str, typer.Option("--expires", help="Lifetime of the new targets version, e.g. 365d")]
RoleArgument = Annotated[str, typer.Argument(metavar="ROLE", help="The team's delegated role, e.g. sensor-team")]


def _push_targets(client: HubClient, directory: Path, record: bytes | None, body: dict[str, Any]) -> dict[str, Any]:
    """Push new top-level targets; when the hub refuses them, the key directory's record is put back."""
    try:
        accepted: dict[str, Any] = client.call("POST", "/repository/targets", body=body)
    except CliError as exc:
        if exc.exit_code == EXIT_REFUSED:
            restore_targets_record(directory, record)  # the hub stored nothing: as if never signed
        raise
    return accepted


@app.command("delegate")
def delegate_command(
    role: RoleArgument,
    directory: Annotated[Path, typer.Option("--dir", help="The publisher key directory (its targets keys sign)")],
    team: Annotated[
        Path, typer.Option("--team-keys", help="The team's keys.json (public keys; keys init --delegated)")
    ],
    apps: Annotated[list[str], typer.Option("--app", help="An app whose releases the team signs (repeatable)")],
    expires: Expires = "365d",
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
) -> None:
    """Delegate apps to a team's role: a new targets version naming its keys and the apps' paths, pushed (operator).

    The team then signs those apps' releases with its own keys (release sign/publish with its
    key directory), and no other app. Delegating a role again replaces its keys and apps.
    """
    lifetime = timedelta(seconds=parse_duration(expires))
    client = HubClient(hub, token, ca)
    try:
        found = team_keys(team)
        if found is None or found[0] != role:
            raise KeyStoreError(f"{team} holds the keys of {found[0] if found else 'no role'}, not of {role}")
        record = targets_record(directory)
        metadata = delegate(directory, role, found[1], apps, now=datetime.now(UTC), lifetime=lifetime)
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    accepted = _push_targets(client, directory, record, metadata.to_dict())
    out.print(
        f"targets version {accepted['version']} delegates {', '.join(dict.fromkeys(apps))} to {role} "
        f"(threshold {found[1].threshold} of {len(found[1].keys)} keys)"
    )


@app.command("revoke-delegation")
def revoke_delegation_command(
    role: RoleArgument,
    directory: Annotated[Path, typer.Option("--dir", help="The publisher key directory (its targets keys sign)")],
    expires: Expires = "365d",
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
) -> None:
    """Revoke a team's delegation: new targets without it, pushed (operator); its releases stop being targets."""
    lifetime = timedelta(seconds=parse_duration(expires))
    client = HubClient(hub, token, ca)
    try:
        record = targets_record(directory)
        metadata = revoke(directory, role, now=datetime.now(UTC), lifetime=lifetime)
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    accepted = _push_targets(client, directory, record, metadata.to_dict())
    out.print(
        f"targets version {accepted['version']} no longer delegates to {role}; its releases are no longer targets"
    )


@app.command("delegations")
def delegations_command(
    directory: Annotated[Path, typer.Option("--dir", help="The publisher key directory")],
    json_out: JsonFlag = False,
) -> None:
    """The roles the key directory's targets delegate to: paths, threshold, key IDs (offline)."""
    try:
        found = delegations(directory)
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    if json_out:
        print_json([{"role": d.role, "paths": d.paths, "threshold": d.threshold, "keyids": d.keyids} for d in found])
        return
    rows = [
        {
            "role": d.role,
            "paths": " ".join(d.paths),
            "threshold": f"{d.threshold} of {len(d.keyids)}",
            "keys": ",".join(keyid[:12] for keyid in d.keyids),
        }
        for d in found
    ]
    print_table(rows, ("role", "paths", "threshold", "keys"))

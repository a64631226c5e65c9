"""`edgefleet release build|sign|push|publish|list`: releases from an app directory to the hub, signed offline.

A publisher's key directory signs the top-level targets; a team's (`keys init --delegated`)
signs its delegated role's targets, pushed to ``/repository/targets/ROLE``.
"""

from __future__ import annotations

import json
import tempfile
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
    err,
    out,
    parse_duration,
    print_json,
    print_table,
    transfer_progress,
)
from edgefleet.publisher.errors import PublisherError
from edgefleet.publisher.registry import RegistryClient, RegistryUnavailableError
from edgefleet.publisher.release import Build, build, load_build, sign, signed_targets
from edgefleet.publisher.state import restore_targets_record, signing_role, targets_record
from edgefleet.releases import MAX_RELEASE_COUNTER

app = typer.Typer(help="Releases: build, sign (offline keys), push to the hub, list.", no_args_is_help=True)
KeysDir = Annotated[Path, typer.Option("--keys", help="Publisher key directory (edgefleet keys init)")]
Expires = Annotated[str, typer.Option("--expires", help="Lifetime of the signed targets, e.g. 365d")]
Bundle = Annotated[
    bool,
    typer.Option("--bundle", help="Export every image as an OCI archive into BUILD/images (hubs without a registry)"),
]
InsecureRegistry = Annotated[
    list[str] | None,
    typer.Option(
        "--insecure-registry",
        metavar="HOST:PORT",
        help="Reach this registry over plain HTTP (repeatable); every other registry only over HTTPS",
    ),
]


def _build(app_dir: Path, out_dir: Path, *, bundle: bool, insecure: list[str] | None) -> Build:
    """Build with tags resolved (and images exported, with `bundle`) through the images' registries."""
    try:
        with RegistryClient(insecure=insecure or ()) as registry:
            return build(app_dir, out_dir, resolver=registry.resolve, exporter=registry.export if bundle else None)
    except RegistryUnavailableError as exc:
        raise CliError(str(exc), exit_code=EXIT_UNAVAILABLE, hint="check the registry, or try again later") from exc
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc


def _sign(build_dir: Path, keys: Path, expires: str, *, counter_above: int = 0) -> tuple[str, Path, int]:
    """Sign the build; (role that signed, the signed file, its version)."""
    try:
        metadata = sign(
            build_dir,
            keys,
            now=datetime.now(UTC),
            lifetime=timedelta(seconds=parse_duration(expires)),
            counter_above=counter_above,
        )
        role, file = signed_targets(build_dir)
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    return role, file, metadata.signed.version


def _push(client: HubClient, build_dir: Path) -> dict[str, Any]:
    return _post_targets(client, *_upload(client, build_dir))


def _upload(client: HubClient, build_dir: Path) -> tuple[str, dict[str, Any]]:
    """Upload a signed build's files; returns the role that signed it and its targets metadata, not yet sent."""
    try:
        release = load_build(build_dir)
        role, file = signed_targets(build_dir)
        targets = json.loads(file.read_text())
        listed = targets["signed"]["targets"]
        digests = {path: str(listed[path]["hashes"]["sha256"]) for path in release.files}
    except (PublisherError, OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"{build_dir}: not a signed build ({exc})", exit_code=EXIT_USAGE) from exc
    files = {path: build_dir / name for path, name in release.files.items()}
    total = sum(file.stat().st_size for file in files.values())
    with transfer_progress() as progress:
        task = progress.add_task(f"uploading {release.ref}", total=total)
        for path, file in files.items():
            client.upload(f"/repository/artifacts/{digests[path]}", file, sent=lambda n: progress.advance(task, n))
    signed: dict[str, Any] = targets
    return role, signed


def _post_targets(client: HubClient, role: str, targets: dict[str, Any]) -> dict[str, Any]:
    """POST the top-level targets, or a delegated role's."""
    path = "/repository/targets" if role == "targets" else f"/repository/targets/{role}"
    accepted: dict[str, Any] = client.call("POST", path, body=targets)
    return accepted


def _highest_counter(client: HubClient, app: str) -> int:
    """The highest release counter the hub has seen for `app`, whoever signed it (0: none)."""
    rows = client.call("GET", "/repository/releases", params={"app": app, "limit": 1})
    return max((int(row["release_counter"]) for row in rows), default=0)


@app.command("build")
def build_command(
    app_dir: Annotated[Path, typer.Argument(metavar="APP_DIR", help="Directory with compose.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="New build directory")],
    bundle: Bundle = False,
    insecure_registry: InsecureRegistry = None,
) -> None:
    """Validate the manifest, pin image tags to digests, and write a build directory (docs/publisher-guide.md)."""
    release = _build(app_dir, out_dir, bundle=bundle, insecure=insecure_registry)
    out.print(f"built {release.ref} ({', '.join(release.architectures)}) in {out_dir}")


@app.command("sign")
def sign_command(
    build_dir: Annotated[Path, typer.Argument(metavar="BUILD")],
    keys: KeysDir,
    expires: Expires = "365d",
    counter_above: Annotated[
        int,
        typer.Option(
            "--counter-above",
            min=0,
            max=MAX_RELEASE_COUNTER - 1,
            help="Give the release a counter above N (the app's highest on the hub, when other keys released it)",
        ),
    ] = 0,
) -> None:
    """Add the build's release to the targets (or a team's delegated role's) and sign them with its keys (offline)."""
    role, file, version = _sign(build_dir, keys, expires, counter_above=counter_above)
    out.print(f"signed {role} version {version} into {file}")


@app.command("push")
def push_command(
    build_dir: Annotated[Path, typer.Argument(metavar="BUILD")],
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
) -> None:
    """Upload a signed build's artifacts and targets; the hub verifies everything before serving it."""
    accepted = _push(HubClient(hub, token, ca), build_dir)
    published = ", ".join(accepted["releases"]) or "no new release"
    out.print(f"{accepted.get('role', 'targets')} version {accepted['version']} published: {published}")


@app.command("publish")
def publish_command(
    app_dir: Annotated[Path, typer.Argument(metavar="APP_DIR")],
    keys: KeysDir,
    expires: Expires = "365d",
    bundle: Bundle = False,
    insecure_registry: InsecureRegistry = None,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
) -> None:
    """Build, sign and push in one step (temporary build dir; a push the hub did not take undoes the signing).

    The release counter is above the app's highest on the hub too, so an app whose earlier
    releases other keys signed (before or after a delegation) carries on from there.
    """
    client = HubClient(hub, token, ca)
    try:
        role = signing_role(keys)
        record = targets_record(keys, role=role)
    except PublisherError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    with tempfile.TemporaryDirectory(prefix="edgefleet-build-") as tmp:
        build_dir = Path(tmp) / "build"
        release = _build(app_dir, build_dir, bundle=bundle, insecure=insecure_registry)
        _sign(build_dir, keys, expires, counter_above=_highest_counter(client, release.app))
        try:
            role, targets = _upload(client, build_dir)
        except BaseException:
            restore_targets_record(keys, record, role=role)  # the targets were never sent: nothing can be stored
            raise
        try:
            accepted = _post_targets(client, role, targets)
        except BaseException as exc:
            _settle_failed_push(client, release, keys, record, exc, role=role)
            raise
    out.print(f"published {release.ref} in {role} version {accepted['version']}")


def _settle_failed_push(
    client: HubClient, release: Build, keys: Path, record: bytes | None, exc: BaseException, *, role: str = "targets"
) -> None:
    """After the targets' POST failed: undo the signing if the hub did not store them, so publishing again works.

    A refusal stores nothing (the hub checks everything first). After a lost connection or
    Ctrl-C the hub may have stored the targets, so it is asked; if it cannot say, the record
    is kept (the next publish then carries this release too, its files being uploaded).
    """
    refused = isinstance(exc, CliError) and exc.exit_code == EXIT_REFUSED
    stored: bool | None = False if refused else _listed(client, release)
    if stored is False:
        restore_targets_record(keys, record, role=role)
    elif stored is None:
        err.print(
            f"could not tell whether the hub stored {release.ref}: `edgefleet release list --app {release.app}` "
            "shows it if it did; if not, the next publish carries it",
            markup=False,
        )


def _listed(client: HubClient, release: Build) -> bool | None:
    """Whether the hub lists the release (None: it cannot be asked)."""
    try:
        rows = client.call("GET", "/repository/releases", params={"app": release.app, "limit": 100_000})
    except CliError:
        return None
    return any(row.get("version") == release.version for row in rows)


@app.command("list")
def list_command(
    app_name: Annotated[str | None, typer.Option("--app")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 1000,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Published releases: app, version, counter, architectures, targets, signing role and keys, status."""
    rows = HubClient(hub, token, ca).call("GET", "/repository/releases", params={"app": app_name, "limit": limit})
    if json_out:
        print_json(rows)
        return
    for row in rows:
        row["targets"] = len(row["artifacts"])
        row["architectures"] = ",".join(row["architectures"])
        row["signed_by"] = f"{row['role']}: " + ",".join(keyid[:8] for keyid in row["signer_keyids"])
        row["status"] = "current" if row["current"] else "withdrawn"
    columns = ("app", "version", "release_counter", "architectures", "targets", "signed_by", "status", "created_at")
    print_table(rows, columns)

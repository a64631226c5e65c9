"""`edgefleet token create|list|revoke`: enrollment tokens for devices."""

from __future__ import annotations

from typing import Annotated

import typer

from edgefleet.cli.common import (
    CaFile,
    HubClient,
    HubUrl,
    JsonFlag,
    Token,
    out,
    parse_duration,
    parse_tags,
    print_json,
    print_table,
)

app = typer.Typer(help="Enrollment tokens that let devices join a fleet.", no_args_is_help=True)
COLUMNS = ("id", "fleet", "tags", "used", "uses", "require_approval", "expires_at", "revoked_at")


@app.command("create")
def create(
    fleet: Annotated[str, typer.Option("--fleet", help="Fleet the devices join")],
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Initial tag key=value (repeatable)")] = None,
    uses: Annotated[int, typer.Option("--uses", min=1, help="How many devices may use it")] = 1,
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime, e.g. 24h, 7d")] = "24h",
    require_approval: Annotated[
        bool, typer.Option("--require-approval", help="Devices wait as pending until accepted")
    ] = False,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Create an enrollment token; the secret is printed once."""
    body = {
        "fleet": fleet,
        "tags": parse_tags(tag or []),
        "uses": uses,
        "ttl_seconds": parse_duration(ttl),
        "require_approval": require_approval,
    }
    created = HubClient(hub, token, ca).call("POST", "/enrollment-tokens", body=body)
    if json_out:
        print_json(created)
        return
    out.print(
        f"token id: {created['id']}  fleet: {created['fleet']}  uses: {created['uses']}  "
        f"expires: {created['expires_at']}"
    )
    out.print(created["token"])


@app.command("list")
def list_tokens(hub: HubUrl = None, token: Token = None, ca: CaFile = None, json_out: JsonFlag = False) -> None:
    """List enrollment tokens (secrets are never shown again)."""
    rows = HubClient(hub, token, ca).call("GET", "/enrollment-tokens", params={"limit": 1000})
    print_json(rows) if json_out else print_table(rows, COLUMNS)


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID")], hub: HubUrl = None, token: Token = None, ca: CaFile = None
) -> None:
    """Revoke an enrollment token."""
    revoked = HubClient(hub, token, ca).call("DELETE", f"/enrollment-tokens/{token_id}")
    out.print(f"revoked token {revoked['id']}")

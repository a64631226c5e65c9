"""`edgefleet user ...` and `edgefleet apitoken ...`: operator accounts and their API tokens (admins)."""

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
    print_json,
    print_table,
)

users = typer.Typer(help="Operator accounts (admin).", no_args_is_help=True)
apitokens = typer.Typer(help="Operator API tokens (admin).", no_args_is_help=True)


@users.command("create")
def create_user(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin")] = "viewer",
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Create an operator account."""
    user = HubClient(hub, token, ca).call("POST", "/users", body={"name": name, "role": role})
    print_json(user) if json_out else out.print(f"created user {user['name']} ({user['role']})")


@users.command("list")
def list_users(hub: HubUrl = None, token: Token = None, ca: CaFile = None, json_out: JsonFlag = False) -> None:
    """List operator accounts."""
    rows = HubClient(hub, token, ca).call("GET", "/users", params={"limit": 1000})
    print_json(rows) if json_out else print_table(rows, ("name", "role", "created_at", "disabled_at"))


@users.command("revoke")
def revoke_user(
    name: Annotated[str, typer.Argument(metavar="NAME")], hub: HubUrl = None, token: Token = None, ca: CaFile = None
) -> None:
    """Disable an account; all its API tokens stop working."""
    user = HubClient(hub, token, ca).call("DELETE", f"/users/{name}")
    out.print(f"disabled user {user['name']}")


@apitokens.command("create")
def create_token(
    user: Annotated[str, typer.Option("--user", help="Owner; the token acts with this user's role")],
    description: Annotated[str, typer.Option("--description")] = "",
    ttl: Annotated[str | None, typer.Option("--ttl", help="Lifetime, e.g. 90d; none = no expiry")] = None,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Create an API token; the secret is printed once."""
    body = {"user": user, "description": description, "ttl_seconds": parse_duration(ttl) if ttl else None}
    created = HubClient(hub, token, ca).call("POST", "/api-tokens", body=body)
    if json_out:
        print_json(created)
        return
    out.print(f"token id: {created['id']}  user: {created['user']}  expires: {created['expires_at'] or 'never'}")
    out.print(created["token"])


@apitokens.command("list")
def list_tokens(
    user: Annotated[str | None, typer.Option("--user")] = None,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """List API tokens (metadata only)."""
    rows = HubClient(hub, token, ca).call("GET", "/api-tokens", params={"user": user, "limit": 1000})
    columns = ("id", "user", "description", "created_at", "expires_at", "revoked_at", "last_used_at")
    print_json(rows) if json_out else print_table(rows, columns)


@apitokens.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(metavar="ID")], hub: HubUrl = None, token: Token = None, ca: CaFile = None
) -> None:
    """Revoke an API token."""
    revoked = HubClient(hub, token, ca).call("DELETE", f"/api-tokens/{token_id}")
    out.print(f"revoked API token {revoked['id']}")

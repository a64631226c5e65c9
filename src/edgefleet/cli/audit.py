"""`edgefleet audit list|verify`: read the tamper-evident audit log and check its chain."""

from __future__ import annotations

from typing import Annotated

import typer

from edgefleet.cli.common import (
    EXIT_FAILED,
    CaFile,
    CliError,
    HubClient,
    HubUrl,
    JsonFlag,
    Token,
    out,
    print_json,
    print_table,
)

app = typer.Typer(help="The hub's tamper-evident audit log.", no_args_is_help=True)


@app.command("list")
def list_entries(
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 100,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Newest entries first."""
    rows = HubClient(hub, token, ca).call("GET", "/audit", params={"limit": limit})
    columns = ("seq", "at", "actor", "action", "target", "outcome")
    print_json(rows) if json_out else print_table(rows, columns)


@app.command("verify")
def verify(
    expect_head: Annotated[
        str | None, typer.Option("--expect-head", help="SEQ:HASH printed by an earlier verify (kept elsewhere)")
    ] = None,
    hub: HubUrl = None,
    token: Token = None,
    ca: CaFile = None,
    json_out: JsonFlag = False,
) -> None:
    """Verify the hash chain; exits 1 and names the first altered, removed or inserted entry."""
    report = HubClient(hub, token, ca).call("GET", "/audit/verify", params={"checkpoint": expect_head})
    if json_out:
        print_json(report)
    if not report["ok"]:
        raise CliError(
            f"audit log broken at entry {report['first_bad_seq']}: {report['problem']}", exit_code=EXIT_FAILED
        )
    if not json_out:
        out.print(f"audit log intact: {report['entries']} entries")
        out.print(f"checkpoint: {report['head_seq']}:{report['head_hash']}  (keep it elsewhere; pass as --expect-head)")

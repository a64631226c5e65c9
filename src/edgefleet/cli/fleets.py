"""`edgefleet fleet env set|unset|list`: settings for every device of a fleet; also builds `device env`.

Both scopes share one command group, made by `env_commands` for a fleet or a device. A
change is one request (`PATCH .../environment`), so several variables change together.
"""

# No `from __future__ import annotations`: the commands below are built per scope, and their
# annotations must be evaluated where the scope's metavar is in reach (Typer reads them later).
from collections.abc import Callable, Sequence
from typing import Annotated, Any
from urllib.parse import quote

import typer

from edgefleet.cli.common import (
    CaFile,
    HubClient,
    HubUrl,
    JsonFlag,
    Token,
    out,
    parse_pairs,
    print_json,
)

app = typer.Typer(help="Fleets: settings shared by all their devices.", no_args_is_help=True)


def say(text: str) -> None:
    """Print text as it is: values come from operators and devices, so no Rich markup or emoji codes."""
    out.print(text, markup=False, emoji=False)


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` arguments into a dict; the value may be empty or contain '='."""
    return parse_pairs(pairs, what="variable", hint="write KEY=VALUE, e.g. LOG_LEVEL=debug")


def print_environment(answer: dict[str, Any]) -> None:
    """A fleet's variables, or a device's effective ones with where each comes from."""
    own: dict[str, str] = answer["environment"]
    effective: dict[str, str] = answer.get("effective", own)
    scoped = "effective" in answer
    if not effective:
        say("(no variables)")
        return
    width = max(len(name) for name in effective)
    for name, value in effective.items():
        source = ("device" if name in own else "fleet").ljust(7) if scoped else ""
        say(f"{source}{name.ljust(width)} = {value}")


def env_commands(*, noun: str, metavar: str, path: Callable[[str], str]) -> typer.Typer:
    """The `env` command group for one scope.

    Args:
        noun: "fleet" or "device", for help texts.
        metavar: how the scope's argument is shown ("FLEET", "ID").
        path: the scope's environment route under the API prefix, from the argument.
    """
    group = typer.Typer(help=f"Environment variables of a {noun}, given to its apps' containers.", no_args_is_help=True)
    owner_arg = Annotated[str, typer.Argument(metavar=metavar, help=f"The {noun}")]

    @group.command("set")
    def set_variables(
        owner: owner_arg,
        pairs: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...", help="Variables to set")],
        hub: HubUrl = None,
        token: Token = None,
        ca: CaFile = None,
        json_out: JsonFlag = False,
    ) -> None:
        """Set variables (all together, audited); the device sees them on its next poll."""
        values = parse_assignments(pairs)
        answer = HubClient(hub, token, ca).call("PATCH", path(owner), body={"set": values})
        print_json(answer) if json_out else say(f"{owner}: set {', '.join(values)}")

    @group.command("unset")
    def unset_variables(
        owner: owner_arg,
        names: Annotated[list[str], typer.Argument(metavar="KEY...", help="Variables to remove")],
        hub: HubUrl = None,
        token: Token = None,
        ca: CaFile = None,
        json_out: JsonFlag = False,
    ) -> None:
        """Remove variables (all together, audited); each must be set."""
        answer = HubClient(hub, token, ca).call("PATCH", path(owner), body={"unset": list(names)})
        print_json(answer) if json_out else say(f"{owner}: unset {', '.join(names)}")

    @group.command("list")
    def list_variables(
        owner: owner_arg, hub: HubUrl = None, token: Token = None, ca: CaFile = None, json_out: JsonFlag = False
    ) -> None:
        """The variables; for a device, the effective ones (its fleet's overlaid by its own)."""
        answer = HubClient(hub, token, ca).call("GET", path(owner))
        print_json(answer) if json_out else print_environment(answer)

    return group


app.add_typer(
    env_commands(noun="fleet", metavar="FLEET", path=lambda fleet: f"/fleets/{quote(fleet, safe='')}/environment"),
    name="env",
)

"""The `edgefleet` command's groups, assembled; `cli.main` runs them (the agent's group runs without them)."""

from __future__ import annotations

import typer

from edgefleet import __version__
from edgefleet.cli import agent, audit, demo, deploy, devices, fleets, hub, keys, release, repo, sim, tokens, users

app = typer.Typer(
    name="edgefleet",
    help="Deploy and update containerized apps on fleets of edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(hub.app, name="hub")
app.add_typer(tokens.app, name="token")
app.add_typer(devices.app, name="device")
app.add_typer(fleets.app, name="fleet")
app.add_typer(deploy.app, name="deploy")
app.add_typer(users.users, name="user")
app.add_typer(users.apitokens, name="apitoken")
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(repo.app, name="repo")
app.add_typer(release.app, name="release")
app.add_typer(agent.app, name="agent")
app.command("sim")(sim.sim)
app.command("demo")(demo.demo)


@app.command("version")
def version() -> None:
    """Print the edgefleet version."""
    print(__version__)

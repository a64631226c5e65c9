"""The `edgefleet` entry point: assembles the command groups and turns errors into one line."""

from __future__ import annotations

import sys

import typer

from edgefleet import __version__
from edgefleet.cli import audit, devices, hub, keys, release, repo, tokens, users
from edgefleet.cli.common import CliError, err

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
app.add_typer(users.users, name="user")
app.add_typer(users.apitokens, name="apitoken")
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(repo.app, name="repo")
app.add_typer(release.app, name="release")


@app.command("version")
def version() -> None:
    """Print the edgefleet version."""
    print(__version__)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line (and a hint) on stderr, never a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except CliError as exc:
        err.print(f"error: {' '.join(exc.message.split())}")  # one line, whatever a driver said
        if exc.hint:
            err.print(f"hint: {exc.hint}")
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # click usage errors and the like arrive here
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

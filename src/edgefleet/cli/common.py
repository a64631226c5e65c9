"""What every command shares: the operator's connection to the hub, output, and one-line errors.

Exit codes: 0 success; 1 the operation ran and failed (e.g. `audit verify` found tampering);
2 usage error; 3 the hub refused the request; 4 the hub could not be reached, or local
configuration is unusable.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import click
import httpx
import typer
from rich.console import Console
from rich.table import Table

from edgefleet.protocol import API_PREFIX, ErrorBody

EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNAVAILABLE = 1, 2, 3, 4

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    """A user-facing failure: printed as one line, never as a traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILED, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


HubUrl = Annotated[str | None, typer.Option("--hub", envvar="EDGEFLEET_HUB", help="Hub URL, e.g. https://hub:8443")]
Token = Annotated[
    str | None, typer.Option("--token", envvar="EDGEFLEET_TOKEN", help="Operator API token", show_default=False)
]
CaFile = Annotated[
    Path | None, typer.Option("--ca", envvar="EDGEFLEET_CA", help="CA bundle the hub's certificate chains to")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


class HubClient:
    """Operator calls to the hub API; hub errors become `CliError` with the hub's code."""

    def __init__(self, hub: str | None, token: str | None, ca: Path | None, *, timeout: float = 30.0) -> None:
        if not hub:
            raise CliError("no hub given", exit_code=EXIT_USAGE, hint="pass --hub URL or set EDGEFLEET_HUB")
        if not token:
            raise CliError("no API token given", exit_code=EXIT_USAGE, hint="pass --token or set EDGEFLEET_TOKEN")
        verify: ssl.SSLContext | bool = True
        if ca is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca))
            except (OSError, ssl.SSLError) as exc:
                raise CliError(f"cannot use CA file {ca}: {exc}", exit_code=EXIT_UNAVAILABLE) from exc
        self._http = httpx.Client(
            base_url=hub.rstrip("/") + API_PREFIX,
            verify=verify,
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}"},
        )

    def call(
        self, method: str, path: str, *, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None
    ) -> Any:
        return self._send(method, path, json=body, params={k: v for k, v in (params or {}).items() if v is not None})

    def upload(self, path: str, file: Path) -> Any:
        """PUT a file as the raw request body, streamed."""
        with file.open("rb") as handle:
            return self._send(
                "PUT", path, content=iter(lambda: handle.read(1024 * 1024), b""), timeout=httpx.Timeout(300.0)
            )

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach the hub: {exc}",
                exit_code=EXIT_UNAVAILABLE,
                hint="check --hub and --ca (or EDGEFLEET_HUB / EDGEFLEET_CA)",
            ) from exc
        if response.status_code >= 400:
            try:
                error = ErrorBody.model_validate_json(response.content)
                message = f"{error.code}: {error.message}"
            except ValueError:
                message = f"HTTP {response.status_code}"
            code = EXIT_UNAVAILABLE if response.status_code >= 500 else EXIT_REFUSED
            raise CliError(f"hub refused: {message}", exit_code=code)
        return response.json()


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, title: str | None = None) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def parse_pairs(pairs: Sequence[str], *, what: str, hint: str) -> dict[str, str]:
    """`key=value` arguments into a dict (the value may be empty or hold '='); anything else is a usage error."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"bad {what} {pair!r}", exit_code=EXIT_USAGE, hint=hint)
        values[key] = value
    return values


def parse_tags(pairs: Sequence[str]) -> dict[str, str]:
    """`key=value` tags into a dict; a pair without '=' is a usage error."""
    return parse_pairs(pairs, what="tag", hint="write tags as key=value")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """'90s', '15m', '24h', '7d', '2w' -> seconds."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) <= 0:
        raise CliError(f"bad duration {text!r}", exit_code=EXIT_USAGE, hint="use e.g. 90s, 15m, 24h, 7d")
    return int(number) * _UNITS[unit]


def run_app(app: typer.Typer, argv: list[str] | None) -> int:
    """Run a Typer app; user errors print one line (and a hint) on stderr, never a traceback."""
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
    except click.ClickException as exc:  # usage errors
        exc.show()
        return exc.exit_code
    return 0

"""What every command shares: the operator's connection to the hub, output, and one-line errors.

Exit codes and `CliError` live in `cli.exits` (re-exported here), which the agent's own
process uses without Rich.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from edgefleet.agent.progress import MAX_TRACKED, target_name
from edgefleet.cli.exits import EXIT_FAILED as EXIT_FAILED
from edgefleet.cli.exits import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from edgefleet.cli.exits import EXIT_REFUSED as EXIT_REFUSED
from edgefleet.cli.exits import EXIT_UNAVAILABLE as EXIT_UNAVAILABLE
from edgefleet.cli.exits import EXIT_USAGE as EXIT_USAGE
from edgefleet.cli.exits import CliError as CliError
from edgefleet.cli.exits import error_lines
from edgefleet.protocol import API_PREFIX, ErrorBody

UPLOAD_CHUNK = 1024 * 1024

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


HubUrl = Annotated[str | None, typer.Option("--hub", envvar="EDGEFLEET_HUB", help="Hub URL, e.g. https://hub:8443")]
Token = Annotated[
    str | None, typer.Option("--token", envvar="EDGEFLEET_TOKEN", help="Operator API token", show_default=False)
]
CaFile = Annotated[
    Path | None, typer.Option("--ca", envvar="EDGEFLEET_CA", help="CA bundle the hub's certificate chains to")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


REFUSAL_HINTS: dict[int | str, str] = {
    401: "the API token is unknown, expired or revoked: check --token or EDGEFLEET_TOKEN",
    "insufficient_role": "your role does not allow this: use a token of a user whose role does (edgefleet user list)",
    404: "check the name or ID (the group's list command shows them)",
    413: "the request is larger than the hub accepts",
    429: "the hub is busy: try again in a moment",
}
"""A hint per hub error code, else per HTTP status; the hub's own code and message are printed before it."""


class HubClient:
    """Operator calls to the hub API; hub errors become `CliError` with the hub's code."""

    def __init__(self, hub: str | None, token: str | None, ca: Path | None, *, timeout: float = 30.0) -> None:
        if not hub:
            raise CliError("no hub given", exit_code=EXIT_USAGE, hint="pass --hub URL or set EDGEFLEET_HUB")
        if not token:
            raise CliError("no API token given", exit_code=EXIT_USAGE, hint="pass --token or set EDGEFLEET_TOKEN")
        if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
            raise CliError(
                "the API token holds spaces, line breaks or characters other than ASCII",
                exit_code=EXIT_USAGE,
                hint="pass the token alone (efa_...), as `apitoken create` or `hub init` printed it",
            )
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

    def upload(self, path: str, file: Path, *, sent: Callable[[int], None] | None = None) -> Any:
        """PUT a file as the raw request body, streamed; `sent` hears the size of each chunk as it goes."""

        def chunks(handle: BinaryIO) -> Iterator[bytes]:
            while chunk := handle.read(UPLOAD_CHUNK):
                yield chunk
                if sent is not None:
                    sent(len(chunk))

        with file.open("rb") as handle:
            return self._send("PUT", path, content=chunks(handle), timeout=httpx.Timeout(300.0))

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
                message, hint = f"{error.code}: {error.message}", REFUSAL_HINTS.get(error.code)
            except ValueError:
                message, hint = f"HTTP {response.status_code}", None
            code = EXIT_UNAVAILABLE if response.status_code >= 500 else EXIT_REFUSED
            hint = hint or (REFUSAL_HINTS.get(response.status_code) if response.status_code != 403 else None)
            raise CliError(f"hub refused: {message}", exit_code=code, hint=hint)
        return response.json()


def transfer_progress(console: Console = err) -> Progress:
    """Progress bars for uploads and downloads, on stderr and only on a terminal (stdout stays for results)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


class TerminalDownloads:
    """The agent's download progress as bars on a terminal: shown while downloads run, kept when they end."""

    def __init__(self, console: Console = err) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def update(self, url: str, received: int, total: int | None) -> None:
        task = self._tasks.get(url)
        if task is None:
            if len(self._tasks) >= MAX_TRACKED:
                return  # a bar for each of the first few at once is enough
            if self._progress is None:
                self._progress = transfer_progress(self._console)
                self._progress.start()
            task = self._tasks[url] = self._progress.add_task(f"downloading {target_name(url)}", total=total)
        if self._progress is not None:
            self._progress.update(task, completed=received, total=total)

    def end(self, url: str, *, complete: bool) -> None:
        task = self._tasks.pop(url, None)
        if task is None or self._progress is None:
            return
        if not complete:
            self._progress.update(task, description=f"stopped {target_name(url)}")
        if not self._tasks:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        """Stop the bars (the agent is stopping)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress, self._tasks = None, {}


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


def run_app(app: typer.Typer, argv: list[str] | None, *, prog_name: str | None = None) -> int:
    """Run a Typer app; user errors print one line (and a hint) on stderr, never a traceback."""
    try:
        # Not standalone, typer returns an Exit's code (Ctrl-C becomes Exit(130)) instead of raising it.
        code = app(args=argv, prog_name=prog_name, standalone_mode=False)
    except CliError as exc:
        _print_error(exc.message, exc.hint)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        return EXIT_INTERRUPTED
    except typer.TyperException as exc:  # the parser's usage errors (typer vendors click's exceptions)
        return _usage_error(exc)
    except OSError as exc:  # a file or socket a command did not convert: still one line
        where = f" ({exc.filename})" if exc.filename else ""
        _print_error(f"{exc.strerror or exc}{where}", "check the paths and permissions given")
        return EXIT_UNAVAILABLE
    if code == EXIT_INTERRUPTED:
        err.print("aborted")
    return code if isinstance(code, int) else 0  # commands return None: only an Exit gives a code


def _print_error(message: str, hint: str | None) -> None:
    err.print(error_lines(message, hint), markup=False, highlight=False)


def _usage_error(exc: typer.TyperException) -> int:
    """A bad flag, value or command: one line and a hint naming what would be right."""
    ctx = getattr(exc, "ctx", None)
    message = exc.format_message()
    if ctx is None:
        _print_error(message, None)
        return EXIT_USAGE
    commands = getattr(ctx.command, "list_commands", None)
    if commands is not None and "\n" in message.strip():  # a group called bare: its help is the answer
        err.print(message.rstrip(), markup=False, highlight=False)
        return EXIT_USAGE
    hint = f"see '{ctx.command_path} --help'"
    if commands is not None:
        hint = f"one of: {', '.join(commands(ctx))} ({hint})"
    _print_error(message, hint)
    return EXIT_USAGE

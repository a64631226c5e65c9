"""A real hub: `edgefleet hub init` and `edgefleet hub serve` as subprocesses, reached over HTTPS."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import secrets
import select
import socket
import ssl
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL, backends


def edgefleet(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "edgefleet.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r")


class Terminal:
    """A process on a pseudo-terminal (so Rich sees an interactive one), its output read as it comes."""

    def __init__(
        self, argv: list[str], *, env: dict[str, str] | None = None, rows: int = 50, columns: int = 120
    ) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        overrides = ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES", "CI")
        inherited = {k: v for k, v in os.environ.items() if k not in overrides}
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env={**inherited, "TERM": "xterm-256color", **(env or {})},
        )
        os.close(slave)
        self.master = master
        self.raw = bytearray()

    def read_until(self, marker: str | None, *, timeout: float) -> bool:
        """Read until `marker` was written (True), or the terminal closed or the time ran out (False).

        With no marker, read until every writer has closed the terminal (True).
        """
        wanted, deadline = marker.encode() if marker else None, time.monotonic() + timeout
        while wanted is None or wanted not in self.raw:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if select.select([self.master], [], [], min(left, 1.0))[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    return wanted is None
                if not chunk:
                    return wanted is None
                self.raw += chunk
        return True

    def text(self) -> str:
        """What was written, without escape sequences and carriage returns."""
        return ESCAPES.sub("", self.raw.decode(errors="replace"))

    def close(self) -> None:
        os.close(self.master)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def in_terminal(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal until it exits: (exit code, all it drew, escapes removed)."""
    terminal = Terminal([sys.executable, "-m", "edgefleet.cli.main", *args], env=env, columns=160)
    try:
        done = terminal.read_until(None, timeout=timeout)
        assert done, f"edgefleet {' '.join(args)} still running after {timeout} s: {terminal.text()[-2000:]}"
        return terminal.process.wait(timeout=10), terminal.text()
    finally:
        terminal.close()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Poll `check` every half second until it returns something true; that is returned."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return found


def start_sim(url: str, ca: Path, token: str, devices: int, out: Path, *options: str) -> subprocess.Popen[str]:
    """`edgefleet sim` in a child process: its JSON summary goes to `out`, its log beside it (`.log`)."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "edgefleet.cli.main", "sim", "--devices", str(devices), "--hub", url),
            *("--ca", str(ca), "--token", token, "--offline", "0", "--workers", "1", "--json", *options),
        ],
        stdout=out.open("w"),
        stderr=out.with_suffix(".log").open("w"),
        text=True,
        env=os.environ.copy(),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningHub:
    url: str
    ca: Path
    admin_token: str
    data_dir: Path
    database_url: str | None
    process: subprocess.Popen[str]
    argv: list[str] = field(default_factory=list)
    """How `hub serve` was started: `restart` starts it again the same way."""
    extra_env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None

    def env(self, token: str | None = None) -> dict[str, str]:
        return {"EDGEFLEET_HUB": self.url, "EDGEFLEET_CA": str(self.ca), "EDGEFLEET_TOKEN": token or self.admin_token}

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return edgefleet(*args, env=self.env(token))

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The operator API as the admin, over HTTPS (for set-up steps a test does not check the CLI of)."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca)), timeout=60) as http:
            return http.request(method, f"{self.url}/api/v1{path}", headers=headers, **kwargs)

    def update_outcomes(self, device_id: str) -> list[dict[str, Any]]:
        """The device's update outcomes in the hub's audit log, in the order the hub recorded them."""
        entries = sorted(json.loads(self.cli("audit", "list", "--json").stdout), key=lambda e: e["seq"])
        return [e for e in entries if e["action"].startswith("device.update.") and e["actor"] == f"device:{device_id}"]

    def terminal(self, *args: str) -> tuple[int, str]:
        """The CLI against this hub on a pseudo-terminal: (exit code, everything it drew)."""
        return in_terminal(*args, env=self.env())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Stop the hub process and serve the same data dir and database again (on the same address)."""
        self.stop()
        assert self.log is not None
        self.process = _serve(self.argv, self.extra_env, self.log)
        _wait_until_serving(self.url, self.ca, self.process, self.log)


def _fresh_postgres() -> Iterator[str]:
    name = f"edgefleet_e2e_{secrets.token_hex(4)}"
    base = make_url(POSTGRES_URL)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _serve(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("a") as output:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})


def _wait_until_serving(url: str, ca: Path, process: subprocess.Popen[str], log: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", verify=context, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"hub did not start:\n{log.read_text()}")
        time.sleep(0.1)


def start_hub(
    tmp_path: Path,
    database_url: str | None,
    env: dict[str, str] | None = None,
    *,
    bind: str = "127.0.0.1",
    serve_args: tuple[str, ...] = (),
) -> Iterator[RunningHub]:
    """`edgefleet hub serve [SERVE_ARGS]` on `bind` (its certificate names that address too), until the test ends."""
    data_dir = tmp_path / "hub"
    db_args = ["--database-url", database_url] if database_url else []
    names = ["--hostname", "hub.test"] + (["--hostname", bind] if bind != "127.0.0.1" else [])
    init = edgefleet("hub", "init", "--data-dir", str(data_dir), *names, *db_args)
    assert init.returncode == 0, init.stderr
    token = next(line.split()[-1] for line in init.stdout.splitlines() if line.startswith("admin token:"))
    port = free_port()
    log = tmp_path / "hub.log"
    argv = [
        *(sys.executable, "-m", "edgefleet.cli.main", "hub", "serve"),
        *("--data-dir", str(data_dir), "--bind", f"{bind}:{port}", *db_args, *serve_args),
    ]
    url = f"https://{bind}:{port}"
    process = _serve(argv, env or {}, log)
    _wait_until_serving(url, data_dir / "ca.crt", process, log)
    hub = RunningHub(
        url=url,
        ca=data_dir / "ca.crt",
        admin_token=token,
        data_dir=data_dir,
        database_url=database_url,
        process=process,
        argv=argv,
        extra_env=env or {},
        log=log,
    )
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(params=backends())
def running_hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningHub]:
    if request.param == "sqlite":
        yield from start_hub(tmp_path, None)
        return
    for url in _fresh_postgres():
        yield from start_hub(tmp_path, url)


@pytest.fixture
def sqlite_hub(tmp_path: Path) -> Iterator[RunningHub]:
    yield from start_hub(tmp_path, None)


@pytest.fixture
def public_hub(tmp_path: Path) -> Iterator[RunningHub]:
    """A hub whose image repository anyone may read (as a mirror or CDN would serve it)."""
    yield from start_hub(tmp_path, None, env={"EDGEFLEET_PUBLIC_REPOSITORY": "true"})

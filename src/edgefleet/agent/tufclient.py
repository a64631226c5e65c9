"""`edgefleet-tuf-client`: the TUF conformance suite's client protocol, on the agent's fetcher and bounds.

    edgefleet-tuf-client --metadata-dir DIR init TRUSTED_ROOT
    edgefleet-tuf-client --metadata-dir DIR --metadata-url URL refresh
    edgefleet-tuf-client --metadata-dir DIR --metadata-url URL --target-name NAME \\
        --target-base-url URL --target-dir DIR download

Exit 0 on success, 1 on any failure (one line on stderr). Trusted metadata is kept under
unversioned names in METADATA_DIR; a target already downloaded with matching hashes is not
fetched again. `--ca FILE` (an extension) trusts a private CA for HTTPS, such as a hub's.
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import sys
from pathlib import Path
from typing import NoReturn
from urllib import parse

import httpx
from tuf.api.exceptions import DownloadError, RepositoryError
from tuf.ngclient import Updater

from edgefleet.agent.fetcher import HttpxFetcher
from edgefleet.agent.verify import updater_config

TIMEOUT = 30.0


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1, as the conformance protocol requires (argparse's own is 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgefleet-tuf-client", description=__doc__.splitlines()[0])
    parser.add_argument("--metadata-dir", required=True, type=Path)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name", action="append", default=[])
    parser.add_argument("--target-base-url")
    parser.add_argument("--target-dir", type=Path)
    parser.add_argument("--ca", type=Path, help="CA bundle for HTTPS (default: the system's)")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="trust TRUSTED_ROOT from now on (no network)")
    init.add_argument("trusted_root", type=Path)
    commands.add_parser("refresh", help="update the trusted top-level metadata")
    commands.add_parser("download", help="refresh, then download and verify --target-name into --target-dir")
    return parser


def _updater(args: argparse.Namespace, http: httpx.Client) -> Updater:
    if not args.metadata_url:
        raise ValueError("--metadata-url is required")
    return Updater(
        str(args.metadata_dir),
        args.metadata_url,
        target_dir=str(args.target_dir) if args.target_dir else None,
        target_base_url=args.target_base_url,
        fetcher=HttpxFetcher(http),
        config=updater_config(),
        bootstrap=None,
    )


def _download(updater: Updater, args: argparse.Namespace) -> None:
    if not args.target_name or not args.target_base_url or args.target_dir is None:
        raise ValueError("download needs --target-name, --target-base-url and --target-dir")
    args.target_dir.mkdir(parents=True, exist_ok=True)
    updater.refresh()
    for name in args.target_name:
        info = updater.get_targetinfo(name)
        if info is None:
            raise ValueError(f"{name} is not a target of the repository")
        # One file per target path (URL-quoted), so a changed artifact replaces the old one.
        path = str(args.target_dir / parse.quote(name, safe=""))
        if updater.find_cached_target(info, path) is None:
            updater.download_target(info, path)


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            args.metadata_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.trusted_root, args.metadata_dir / "root.json")
            return 0
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(args.ca)) if args.ca else True
        with httpx.Client(verify=verify, timeout=TIMEOUT) as http:
            updater = _updater(args, http)
            if args.command == "refresh":
                updater.refresh()
            else:
                _download(updater, args)
    except (RepositoryError, DownloadError, OSError, ValueError, ssl.SSLError) as exc:
        print(f"edgefleet-tuf-client: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))

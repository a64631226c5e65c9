"""How the agent's TUF client searches delegated targets: each rule the public tuf-conformance suite checks.

A real repository signed with python-tuf's Metadata API (consistent snapshots, a key per
delegated role) is served over loopback HTTP, and `edgefleet-tuf-client` (the conformance
protocol's entry point, on the agent's fetcher and bounds) downloads from it. The server
records which delegated roles were fetched, in order: that is the search the client made.
Every test here fails when the image repository's search is bound to the top-level targets
(`max_delegations=1`), as it was before delegations were supported.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib import parse

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    TOP_LEVEL_ROLE_NAMES,
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.ngclient import Updater

from edgefleet.agent import tufclient
from edgefleet.agent.bounds import DEFAULT_BOUNDS
from edgefleet.agent.verify import director_config, updater_config

EXPIRES = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
ANY_PATH = ("*", "*/*", "*/*/*")
"""Patterns for every path of up to three segments (a `*` matches within one segment only)."""


class Repository:
    """A TUF repository on disk: top-level roles under one key, each delegated role under its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.top = CryptoSigner.generate_ed25519()
        self.signers: dict[str, CryptoSigner] = {}
        self.roles: dict[str, Targets] = {"targets": Targets(expires=EXPIRES)}
        self.files: list[tuple[str, bytes]] = []

    def delegate(
        self,
        delegator: str,
        name: str,
        *,
        paths: Sequence[str] = ANY_PATH,
        prefixes: Sequence[str] | None = None,
        terminating: bool = False,
    ) -> None:
        signer = self.signers.setdefault(name, CryptoSigner.generate_ed25519())
        parent = self.roles[delegator]
        if parent.delegations is None:
            parent.delegations = Delegations(keys={}, roles={})
        assert parent.delegations.roles is not None
        parent.delegations.keys[signer.public_key.keyid] = signer.public_key
        parent.delegations.roles[name] = DelegatedRole(
            name,
            [signer.public_key.keyid],
            1,
            terminating,
            None if prefixes is not None else list(paths),
            None if prefixes is None else list(prefixes),
        )
        self.roles.setdefault(name, Targets(expires=EXPIRES))

    def add(self, role: str, path: str, data: bytes) -> None:
        self.roles[role].targets[path] = TargetFile.from_data(path, data, ["sha256"])
        self.files.append((path, data))

    def publish(self) -> Path:
        """Write version 1 of everything; returns the root to trust."""
        metadata, targets = self.directory / "metadata", self.directory / "targets"
        metadata.mkdir(parents=True)
        root = Root(expires=EXPIRES, consistent_snapshot=True)
        for role in TOP_LEVEL_ROLE_NAMES:
            root.add_key(self.top.public_key, role)
        self._write(metadata / "1.root.json", Metadata(root), self.top)
        for name, signed in self.roles.items():
            self._write(metadata / f"1.{name}.json", Metadata(signed), self.signers.get(name, self.top))
        snapshot = Snapshot(expires=EXPIRES, meta={f"{name}.json": MetaFile(1) for name in self.roles})
        self._write(metadata / "1.snapshot.json", Metadata(snapshot), self.top)
        self._write(metadata / "timestamp.json", Metadata(Timestamp(expires=EXPIRES)), self.top)
        for path, data in self.files:
            folder, _, name = path.rpartition("/")
            where = targets / folder / f"{hashlib.sha256(data).hexdigest()}.{name}"
            where.parent.mkdir(parents=True, exist_ok=True)
            where.write_bytes(data)
        return metadata / "1.root.json"

    @staticmethod
    def _write(path: Path, metadata: Metadata[Any], signer: CryptoSigner) -> None:
        metadata.sign(signer)
        path.write_bytes(metadata.to_bytes())


class Server:
    """Serves a directory over loopback HTTP and remembers the paths asked for."""

    def __init__(self, directory: Path) -> None:
        requests: list[str] = []

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                requests.append(self.path)

        self.requests = requests
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(directory)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def delegated_fetches(self) -> list[str]:
        """Delegated roles whose metadata the client fetched, in order."""
        roles = []
        for path in self.requests:
            name = path.rsplit("/", 1)[-1]
            if path.startswith("/metadata/") and name.endswith(".json"):
                role = name.removesuffix(".json").split(".", 1)[-1]
                if role not in TOP_LEVEL_ROLE_NAMES:
                    roles.append(role)
        return roles

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(tmp_path / "repository")


@pytest.fixture
def served(repo: Repository, tmp_path: Path) -> Iterator[Server]:
    server = Server(repo.directory)
    yield server
    server.close()


class Client:
    """`edgefleet-tuf-client`, run as its entry point runs it, against one repository.

    Each download starts from a new metadata directory holding only the trusted root, so the
    roles fetched are the whole search (a client loads roles it verified before from disk).
    """

    def __init__(self, repo: Repository, server: Server, tmp: Path) -> None:
        self.server, self.tmp = server, tmp
        self.root, self.target_dir = repo.publish(), tmp / "client-targets"
        self.runs = 0

    def download(self, *names: str) -> int:
        self.runs += 1
        metadata_dir = self.tmp / f"client-metadata-{self.runs}"
        assert tufclient.run(["--metadata-dir", str(metadata_dir), "init", str(self.root)]) == 0
        self.server.requests.clear()
        return tufclient.run(
            [
                *("--metadata-dir", str(metadata_dir), "--metadata-url", f"{self.server.url}/metadata/"),
                *(arg for name in names for arg in ("--target-name", name)),
                *("--target-base-url", f"{self.server.url}/targets/", "--target-dir", str(self.target_dir)),
                "download",
            ]
        )

    def downloaded(self, name: str) -> bytes:
        return (self.target_dir / parse.quote(name, safe="")).read_bytes()


@pytest.fixture
def client(repo: Repository, served: Server, tmp_path: Path) -> Any:
    """Called once the repository is set up: publishes it and trusts its root."""
    return partial(Client, repo, served, tmp_path)


def test_single_level_roles_are_searched_in_order_after_the_top_level_targets(repo, client):
    repo.delegate("targets", "a")
    repo.delegate("targets", "b")
    repo.add("b", "app/1.0.0/compose.yaml", b"signed by b")
    repo.add("targets", "app/2.0.0/compose.yaml", b"top-level")
    repo.add("a", "app/2.0.0/compose.yaml", b"a comes after the top-level targets")
    tuf = client()
    assert tuf.download("app/1.0.0/compose.yaml") == 0
    assert tuf.downloaded("app/1.0.0/compose.yaml") == b"signed by b"
    assert tuf.server.delegated_fetches() == ["a", "b"]
    assert tuf.download("app/2.0.0/compose.yaml") == 0
    assert tuf.downloaded("app/2.0.0/compose.yaml") == b"top-level"
    assert tuf.server.delegated_fetches() == []


def test_two_and_three_level_delegations(repo, client):
    repo.delegate("targets", "a")
    repo.delegate("targets", "b")
    repo.delegate("b", "c")
    repo.delegate("c", "d")
    repo.add("c", "two/levels", b"c")
    repo.add("d", "three/levels", b"d")
    tuf = client()
    assert tuf.download("two/levels") == 0
    assert tuf.server.delegated_fetches() == ["a", "b", "c"]
    assert tuf.download("three/levels") == 0
    assert tuf.downloaded("three/levels") == b"d"
    assert tuf.server.delegated_fetches() == ["a", "b", "c", "d"]


def test_preorder_depth_first_the_first_role_that_lists_the_path_wins(repo, client):
    repo.delegate("targets", "a")
    repo.delegate("targets", "b")
    repo.delegate("a", "c")
    repo.delegate("a", "d")
    repo.add("d", "app/1.0.0/compose.yaml", b"found under a, through d")
    repo.add("b", "app/1.0.0/compose.yaml", b"b comes after a's whole subtree")
    tuf = client()
    assert tuf.download("app/1.0.0/compose.yaml") == 0
    assert tuf.downloaded("app/1.0.0/compose.yaml") == b"found under a, through d"
    assert tuf.server.delegated_fetches() == ["a", "c", "d"]
    assert tuf.download("missing/1.0.0/compose.yaml") == 1
    assert tuf.server.delegated_fetches() == ["a", "c", "d", "b"]


@pytest.mark.parametrize(
    ("terminating", "visited"),
    [("c", ["a", "c"]), ("a", ["a", "c", "d"])],
    ids=["second level", "first level"],
)
def test_a_terminating_role_ends_the_search_where_it_stands(repo, client, terminating, visited):
    repo.delegate("targets", "a", terminating=terminating == "a")
    repo.delegate("targets", "b")
    repo.delegate("a", "c", terminating=terminating == "c")
    repo.delegate("a", "d")
    repo.add("b", "app/1.0.0/compose.yaml", b"never reached")
    tuf = client()
    assert tuf.download("app/1.0.0/compose.yaml") == 1
    assert tuf.server.delegated_fetches() == visited
    assert not tuf.target_dir.exists() or not any(tuf.target_dir.iterdir())


def test_a_terminating_role_that_lists_the_path_is_used(repo, client):
    repo.delegate("targets", "a")
    repo.delegate("targets", "b", paths=["app/*/*"], terminating=True)
    repo.delegate("targets", "c")
    repo.add("b", "app/1.0.0/compose.yaml", b"b")
    repo.add("c", "app/1.0.0/compose.yaml", b"c")
    tuf = client()
    assert tuf.download("app/1.0.0/compose.yaml") == 0
    assert tuf.downloaded("app/1.0.0/compose.yaml") == b"b"
    assert tuf.server.delegated_fetches() == ["a", "b"]


def test_roles_whose_paths_do_not_match_are_skipped(repo, client):
    repo.delegate("targets", "a", paths=["*.py"])
    repo.delegate("targets", "b", paths=["app/*/*"])
    repo.delegate("b", "c", paths=["other/*/*"])
    repo.delegate("b", "d", paths=["app/1.*/*"])
    repo.add("a", "app/1.0.0/compose.yaml", b"a may not sign it")
    repo.add("c", "app/1.0.0/compose.yaml", b"c may not sign it")
    repo.add("d", "app/1.0.0/compose.yaml", b"d")
    tuf = client()
    assert tuf.download("app/1.0.0/compose.yaml") == 0
    assert tuf.downloaded("app/1.0.0/compose.yaml") == b"d"
    assert tuf.server.delegated_fetches() == ["b", "d"]


def test_roles_whose_path_hash_prefixes_do_not_match_are_skipped(repo, client):
    path = "app/1.0.0/compose.yaml"
    digest = hashlib.sha256(path.encode()).hexdigest()
    other = "0" if digest[0] != "0" else "1"
    repo.delegate("targets", "a", prefixes=[other])
    repo.delegate("targets", "m", prefixes=[digest[:1]])
    repo.delegate("targets", "b", prefixes=[other + "f", digest[:2]])
    repo.add("a", path, b"a")
    repo.add("b", path, b"b")
    tuf = client()
    assert tuf.download(path) == 0
    assert tuf.downloaded(path) == b"b"
    assert tuf.server.delegated_fetches() == ["m", "b"]


def test_a_cyclic_graph_ends_and_visits_each_role_once(repo, client):
    repo.delegate("targets", "a")
    repo.delegate("targets", "b")
    repo.delegate("b", "c")
    repo.delegate("c", "d")
    repo.delegate("d", "b")
    tuf = client()
    assert tuf.download("nowhere/1.0.0/compose.yaml") == 1
    assert tuf.server.delegated_fetches() == ["a", "b", "c", "d"]


def test_two_roles_delegating_to_a_third(repo, client):
    repo.delegate("targets", "a")
    repo.delegate("targets", "b")
    repo.delegate("b", "c")
    repo.delegate("a", "c")
    repo.add("c", "app/1.0.0/compose.yaml", b"c")
    tuf = client()
    assert tuf.download("app/1.0.0/compose.yaml") == 0
    assert tuf.server.delegated_fetches() == ["a", "c"]  # reached through a first
    assert tuf.download("missing/1.0.0/compose.yaml") == 1
    assert tuf.server.delegated_fetches() == ["a", "c", "b"]  # and visited once


def test_two_roles_delegating_to_a_third_for_different_paths(repo, client):
    repo.delegate("targets", "a")
    repo.delegate("targets", "b")
    repo.delegate("b", "c")
    repo.delegate("a", "c", paths=["*.py"])
    repo.add("c", "app/1.0.0/compose.yaml", b"c")
    tuf = client()
    assert tuf.download("app/1.0.0/compose.yaml") == 0
    assert tuf.server.delegated_fetches() == ["a", "b", "c"]  # a does not delegate this path to c


def test_target_paths_with_separators(repo, client):
    repo.delegate("targets", "b", paths=["releases/*/*"])
    repo.delegate("b", "c", paths=["releases/x/*"])
    repo.delegate("b", "d", paths=["releases/y/*.zip"])
    repo.add("c", "releases/x/x_v1", b"x by c")
    repo.add("d", "releases/y/y_v1.zip", b"y by d")
    repo.add("d", "releases/z/z_v1.zip", b"z: d is not delegated releases/z")
    tuf = client()
    assert tuf.download("releases/x/x_v1") == 0
    assert tuf.downloaded("releases/x/x_v1") == b"x by c"
    assert tuf.server.delegated_fetches() == ["b", "c"]
    assert tuf.download("releases/y/y_v1.zip") == 0
    assert tuf.downloaded("releases/y/y_v1.zip") == b"y by d"
    assert tuf.server.delegated_fetches() == ["b", "d"]
    assert tuf.download("releases/z/z_v1.zip") == 1
    assert tuf.server.delegated_fetches() == ["b"]


def test_a_star_never_crosses_a_separator(repo, client):
    """fnmatch per path segment: `sensor/*` is not `sensor/1.0.0/compose.yaml`; our apps need `APP/*/*`."""
    repo.delegate("targets", "docs", paths=["*.md"])
    repo.delegate("targets", "any")
    repo.delegate("targets", "short", paths=["sensor/*"])
    repo.delegate("targets", "team", paths=["sensor/*/*", "sensor/*/images/*"])
    repo.add("docs", "releases/README.md", b"*.md is one segment")
    repo.add("short", "sensor/1.0.0/compose.yaml", b"sensor/* is two segments")
    repo.add("team", "sensor/1.0.0/compose.yaml", b"manifest")
    repo.add("team", "sensor/1.0.0/images/sha256-ab.tar", b"bundle")
    tuf = client()
    assert tuf.download("releases/README.md") == 1
    assert tuf.server.delegated_fetches() == ["any"]
    assert tuf.download("sensor/1.0.0/compose.yaml", "sensor/1.0.0/images/sha256-ab.tar") == 0
    assert tuf.downloaded("sensor/1.0.0/compose.yaml") == b"manifest"
    assert tuf.downloaded("sensor/1.0.0/images/sha256-ab.tar") == b"bundle"
    assert tuf.server.delegated_fetches() == ["any", "team"]


def test_the_search_is_bounded_by_max_delegations(repo, client):
    assert DEFAULT_BOUNDS.delegations == 32  # python-tuf's default: deep enough for any sane graph, and bounded
    chain = [f"r{i}" for i in range(1, 40)]
    for delegator, name in zip(["targets", *chain], chain, strict=False):
        repo.delegate(delegator, name)
    # python-tuf visits the top-level targets and then at most `Bounds.delegations` delegated roles.
    last, beyond = chain[31], chain[32]
    repo.add(last, "deep/1.0.0/compose.yaml", b"last reachable")
    repo.add(beyond, "deeper/1.0.0/compose.yaml", b"beyond the bound")
    tuf = client()
    assert tuf.download("deep/1.0.0/compose.yaml") == 0
    assert tuf.download("deeper/1.0.0/compose.yaml") == 1
    assert tuf.server.delegated_fetches() == chain[:32]


def test_the_directors_bounds_never_leave_its_top_level_targets(repo, served, tmp_path):
    repo.delegate("targets", "a")
    repo.add("a", "app/1.0.0/compose.yaml", b"a")
    repo.add("targets", "app/2.0.0/compose.yaml", b"top-level")
    metadata_dir = tmp_path / "director"
    metadata_dir.mkdir()
    root = repo.publish().read_bytes()
    director = Updater(str(metadata_dir), f"{served.url}/metadata/", config=director_config(), bootstrap=root)
    director.refresh()
    assert director.get_targetinfo("app/2.0.0/compose.yaml") is not None
    assert director.get_targetinfo("app/1.0.0/compose.yaml") is None
    assert served.delegated_fetches() == []
    assert updater_config().max_delegations == DEFAULT_BOUNDS.delegations

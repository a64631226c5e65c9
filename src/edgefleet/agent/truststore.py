"""Where a device keeps its trusted TUF metadata, and how a verified copy replaces it (no python-tuf here).

Two sets, ``STATE/tuf/{repository,director}``, each as python-tuf's ngclient keeps them
(``root.json``, ``root_history/N.root.json``, and the other top-level roles). A refresh works
on a private staging copy (`TrustStore.staged`); only `TrustStore.keep` of a copy whose every
check passed changes the trusted set. The verification itself (`agent.verify`) and python-tuf
load only when a target changed, which keeps them out of an idle agent's memory.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgefleet.crypto import write_public_file
from edgefleet.files import sync_dir

REPOSITORY = "repository"
DIRECTOR = "director"
TRUSTED_FILES = ("root.json", "targets.json", "snapshot.json", "timestamp.json")
"""What ngclient keeps of a repository (beside its root versions), in the order `TrustStore.keep` keeps them."""
ROOT_HISTORY = "root_history"


@dataclass(frozen=True)
class TrustStore:
    """Where a device keeps its two sets of trusted TUF metadata (``STATE/tuf/{repository,director}``)."""

    root: Path

    def metadata_dir(self, repo: str) -> Path:
        return self.root / repo

    def is_bootstrapped(self) -> bool:
        return all((self.metadata_dir(repo) / "root.json").exists() for repo in (REPOSITORY, DIRECTOR))

    @contextmanager
    def staged(self, repo: str) -> Iterator[Path]:
        """A private copy of `repo`'s trusted metadata to refresh in; removed afterwards, kept only by `keep`."""
        for stale in self.root.glob(".staging-*"):  # a copy a crash left behind: never trusted
            shutil.rmtree(stale, ignore_errors=True)
        staging = self.root / f".staging-{repo}-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        try:
            trusted = self.metadata_dir(repo)
            (staging / ROOT_HISTORY).mkdir()
            for path in (*trusted.glob("*.json"), *trusted.glob(f"{ROOT_HISTORY}/*.root.json")):
                shutil.copyfile(path, staging / path.relative_to(trusted))  # a root.json link as the root it names
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def keep(self, repo: str, staging: Path) -> None:
        """Make the verified metadata in `staging` the trusted set of `repo`, each changed file atomically.

        Root versions first (``root_history/N.root.json``, then ``root.json`` naming the newest,
        as ngclient keeps them), then targets, snapshot and timestamp.
        """
        trusted = self.metadata_dir(repo)
        (trusted / ROOT_HISTORY).mkdir(mode=0o700, exist_ok=True)
        for fresh in sorted(staging.glob(f"{ROOT_HISTORY}/*.root.json")):
            _keep_file(fresh, trusted / ROOT_HISTORY / fresh.name)
        root = staging / "root.json"
        if root.is_symlink():
            link = trusted / ".root.json.link"
            link.unlink(missing_ok=True)
            link.symlink_to(os.readlink(root))
            os.replace(link, trusted / "root.json")
        for name in TRUSTED_FILES:
            if (staging / name).is_file() and not (name == "root.json" and root.is_symlink()):
                _keep_file(staging / name, trusted / name)
        sync_dir(trusted)

    def bootstrap(self, *, repository_root: bytes, director_root: bytes) -> None:
        """Trust these roots from now on (first use only; later roots arrive only through TUF rotation).

        Raises:
            UpdateRefusedError: a root is not valid root metadata.
        """
        from edgefleet.agent.verify import trust_root  # python-tuf: loaded on a device's first start only

        for repo, root in ((REPOSITORY, repository_root), (DIRECTOR, director_root)):
            directory = self.metadata_dir(repo)
            if (directory / "root.json").exists():
                continue
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            trust_root(directory, root)


def _keep_file(fresh: Path, trusted: Path) -> None:
    """`trusted` becomes a copy of `fresh` (atomically, durably); nothing is written when they are equal."""
    data = fresh.read_bytes()
    if trusted.is_file() and not trusted.is_symlink() and trusted.read_bytes() == data:
        return  # unchanged: no write (flash storage wears)
    write_public_file(trusted, data)

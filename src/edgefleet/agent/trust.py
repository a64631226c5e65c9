"""How a new device comes to trust the image repository's root: pinned (a file or a digest), or the hub's word if asked.

Every later check rests on the image repository's root, so it is pinned by default: the
root itself (``repository_root``, a file provisioned with the device image: the publisher's
``KEYS/repository/root.json``), or its digest (``repository_root_sha256``, given out of band
at enrollment: `root_digest` of the root, as ``edgefleet repo init`` and ``edgefleet keys
root-digest`` print it), for which the agent looks through the hub's root versions. Without
either the agent refuses to start, unless ``trust_first_root`` asks it to take the hub's
root on first use. How the root came to be trusted is kept beside it (``tuf/trust.json``) and
reported in the device's twin, so ``edgefleet device show`` marks devices that took it on
trust. The director's root is the hub's own (its online key) and is taken from the hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgefleet import releases
from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.client import DeviceClient
from edgefleet.agent.errors import RootTrustError as RootTrustError
from edgefleet.agent.identity import LocalIdentity
from edgefleet.agent.truststore import REPOSITORY, TrustStore
from edgefleet.crypto import write_public_file
from edgefleet.protocol import RootTrust

TrustMode = RootTrust
TRUST_FILE = "trust.json"


def root_digest(root: bytes) -> str:
    """`releases.root_digest`, its refusal as this module's error.

    Raises:
        RootTrustError: not root metadata.
    """
    try:
        return releases.root_digest(root)
    except ValueError as exc:
        raise RootTrustError(str(exc)) from exc


@dataclass(frozen=True)
class RootPin:
    """What a device was provisioned with to trust the image repository's root."""

    root: bytes | None = None
    sha256: str | None = None
    first_use: bool = False

    @property
    def mode(self) -> TrustMode:
        return "pinned" if self.root is not None or self.sha256 is not None else "first-use"

    def choose(self, versions: list[bytes]) -> bytes:
        """The root to trust: the pinned file, or the hub's root version with the pinned digest, or (first use) v1.

        Args:
            versions: the hub's image-repository roots from version 1 up (`versions[0]` is v1).

        Raises:
            RootTrustError: nothing pinned and trust on first use not asked for; the pinned file does
                not have the pinned digest; no hub root has it.
        """
        if self.root is not None:
            if self.sha256 is not None and root_digest(self.root) != self.sha256:
                raise RootTrustError("the pinned root file does not have the pinned repository_root_sha256")
            return self.root
        if self.sha256 is not None:
            for root in versions:
                if root_digest(root) == self.sha256:
                    return root
            raise RootTrustError(
                f"none of the hub's {len(versions)} image-repository root versions has the pinned digest "
                f"{self.sha256[:16]}...: this hub does not serve the publisher's repository the device was given"
            )
        self.check()
        if not versions:
            raise RootTrustError("the hub has no image repository root to trust")
        return versions[0]

    def check(self) -> None:
        """Refuse (before enrolling) a device with no pinned root that was not told to trust the hub's.

        Raises:
            RootTrustError: nothing pinned, and trust on first use not asked for.
        """
        if self.mode == "first-use" and not self.first_use:
            raise RootTrustError(
                "no pinned image-repository root: set repository_root (the publisher's root.json) or "
                "repository_root_sha256 (edgefleet keys root-digest), or start once with --trust-first-root"
            )


def save_trust(tuf_dir: Path, mode: TrustMode, root: bytes) -> None:
    """Record how the image repository's root came to be trusted (next to it)."""
    body = {"repository_root": mode, "sha256": root_digest(root)}
    write_public_file(tuf_dir / TRUST_FILE, json.dumps(body, sort_keys=True).encode())


def load_trust(tuf_dir: Path) -> TrustMode | None:
    """How the root was trusted; None when not recorded (a device bootstrapped before this was kept)."""
    try:
        mode = json.loads((tuf_dir / TRUST_FILE).read_text()).get("repository_root")
    except (OSError, ValueError, AttributeError):
        return None
    return "pinned" if mode == "pinned" else "first-use" if mode == "first-use" else None


def establish(
    client: DeviceClient, identity: LocalIdentity, trust: TrustStore, pin: RootPin, *, bounds: Bounds = DEFAULT_BOUNDS
) -> TrustMode:
    """Bootstrap the device's trust store by `pin` (first start only); how its image root came to be trusted.

    Raises:
        RootTrustError: see `RootPin.choose`.
        HubUnreachableError: the hub's roots could not be fetched.
    """
    if not trust.is_bootstrapped():
        pin.check()
        wanted = 0 if pin.root is not None else bounds.root_versions if pin.sha256 is not None else 1
        root = pin.choose(client.repository_roots(identity, limit=wanted) if wanted else [])
        trust.bootstrap(repository_root=root, director_root=client.director_root(identity))
        save_trust(trust.root, pin.mode, root)
        return pin.mode
    recorded = load_trust(trust.root)
    if recorded is not None:
        return recorded
    roots = [path.read_bytes() for path in trust.metadata_dir(REPOSITORY).glob("root_history/*.root.json")]
    roots = roots or [(trust.metadata_dir(REPOSITORY) / "root.json").read_bytes()]
    mode = infer_trust(roots, pin)
    save_trust(trust.root, mode, roots[-1])
    return mode


def infer_trust(trusted_roots: list[bytes], pin: RootPin) -> TrustMode:
    """For a device bootstrapped before trust was recorded: pinned if one of its trusted roots is the pinned one."""
    if pin.mode == "first-use":
        return "first-use"
    wanted = {root_digest(pin.root) if pin.root is not None else pin.sha256}
    for root in trusted_roots:
        try:
            if root_digest(root) in wanted:
                return "pinned"
        except RootTrustError:
            continue
    return "first-use"

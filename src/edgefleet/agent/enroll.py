"""Device side of enrollment: make or load the key, send a CSR with the token, keep what the hub says."""

from __future__ import annotations

import platform
from datetime import datetime, timedelta
from pathlib import Path

from edgefleet import crypto
from edgefleet.agent.bounds import DEFAULT_BOUNDS
from edgefleet.agent.client import DeviceClient
from edgefleet.agent.identity import LocalIdentity, load_identity, load_or_create_key, save_identity
from edgefleet.protocol import Arch, EnrollRequest

_ARCH: dict[str, Arch] = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "i386": "386",
    "riscv64": "riscv64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def host_arch() -> Arch:
    """The architecture of this machine, in OCI terms."""
    return _ARCH.get(platform.machine().lower(), "amd64")


def enroll(
    client: DeviceClient,
    data_dir: Path,
    *,
    token: str,
    arch: Arch | None = None,
    key_type: crypto.KeyType = "ecdsa-p256",
    hostname: str | None = None,
) -> LocalIdentity:
    """Enroll this device once; if it already has an identity, return it unchanged.

    The private key is generated in `data_dir` (mode 0600) and never leaves it: the hub
    receives only a CSR signed with it.

    Raises:
        HubRefusedError: the hub refused (bad or used-up token, key already enrolled, ...).
        HubUnreachableError: retry later.
    """
    existing = load_identity(data_dir)
    if existing.identity is not None:
        return existing
    key = load_or_create_key(data_dir, key_type=key_type)
    request = EnrollRequest(token=token, csr=crypto.make_csr(key), arch=arch or host_arch(), hostname=hostname)
    identity = client.enroll(request)
    save_identity(data_dir, identity)
    return LocalIdentity(key=key, identity=identity)


def refresh(client: DeviceClient, data_dir: Path, local: LocalIdentity) -> LocalIdentity:
    """Ask the hub about this device (e.g. whether a pending device was accepted) and keep the answer."""
    identity = client.whoami(local)
    save_identity(data_dir, identity)
    return LocalIdentity(key=local.key, identity=identity)


def renew_if_due(
    client: DeviceClient,
    data_dir: Path,
    local: LocalIdentity,
    *,
    now: datetime,
    before: timedelta = timedelta(seconds=DEFAULT_BOUNDS.renew_before),
) -> LocalIdentity:
    """Renew the certificate when it expires within `before` (`Bounds.renew_before`); same key, fresh CSR."""
    identity = local.identity
    if identity is None or identity.certificate_not_after is None:
        return local
    if identity.certificate_not_after - now > before:
        return local
    renewed = client.renew(local, crypto.make_csr(local.key))
    save_identity(data_dir, renewed)
    return LocalIdentity(key=local.key, identity=renewed)

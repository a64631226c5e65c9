"""The simulator's CPU-bound jobs, run in worker processes: the agent's own enrollment and verification code.

Each worker process holds one synchronous `DeviceClient` (made by `start_worker`) that the
jobs it runs, one at a time, share. A job names a device's state directory (its key,
identity and trusted TUF metadata, kept exactly as the agent keeps them) and returns plain
data: the agent's errors are converted here, at the process boundary, into a `Failure` that
says what happened and whether trying again can help.
"""

from __future__ import annotations

import shutil
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar

import httpx
from tuf.ngclient import FetcherInterface

from edgefleet.agent.client import DeviceClient
from edgefleet.agent.decide import Choices, Installed, choose_updates, release_mark
from edgefleet.agent.enroll import enroll, refresh
from edgefleet.agent.errors import (
    AgentError,
    DeviceNotAcceptedError,
    HubRefusedError,
    HubUnreachableError,
    UpdateRefusedError,
)
from edgefleet.agent.identity import load_identity, saved_device_id
from edgefleet.agent.policy import Policy
from edgefleet.agent.reconcile import PermissionRefusedError, checked_specs
from edgefleet.agent.runner import load_state, trust_store
from edgefleet.agent.spec import HostFacts, release_specs
from edgefleet.agent.verify import ReleaseVerifier
from edgefleet.manifest import Release
from edgefleet.protocol import Arch
from edgefleet.sim.engine import SimRelease
from edgefleet.sim.shared import share_verification

FailureKind = Literal["unreachable", "refused", "hub-refused", "not-accepted", "permission", "trouble"]
"""refused: a release failed verification; hub-refused: the hub answered 4xx (e.g. a used-up token)."""


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What every worker process needs to reach the hub."""

    hub_url: str
    ca: Path | None
    timeout: float


@dataclass
class _Worker:
    """A worker process's connection to the hub, and the answers it has had (ok, error)."""

    client: DeviceClient
    answers: list[int]


_worker: _Worker | None = None
"""Set once per worker process by `start_worker` (the pool's initializer)."""


def start_worker(setup: WorkerSetup) -> None:
    """Initializer of each worker process: its hub connection, and verification shared between its devices.

    Signals are the parent's: it stops the pool. See `sim.shared` for what is shared (the
    checks of byte-identical image-repository metadata; every device still fetches every file).
    """
    global _worker  # one per process, made before any job runs
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    share_verification()
    answers = [0, 0]

    def count(response: httpx.Response) -> None:
        # TUF asks for the next root version until the hub says 404: that answer is no error.
        probe = response.status_code == 404 and response.request.url.path.endswith(".root.json")
        answers[response.status_code >= 400 and not probe] += 1

    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(setup.ca)) if setup.ca else True
    http = httpx.Client(
        base_url=setup.hub_url.rstrip("/"), verify=verify, timeout=setup.timeout, event_hooks={"response": [count]}
    )
    _worker = _Worker(DeviceClient(http), answers)


def _in_worker(job: Callable[[DeviceClient], Result]) -> Result:
    """Run `job` with this worker's client; the result carries the requests it made."""
    if _worker is None:
        raise RuntimeError("start_worker has not run in this process")
    before = list(_worker.answers)
    result = job(_worker.client)
    ok, errors = (now - then for now, then in zip(_worker.answers, before, strict=True))
    return replace(result, requests=ok + errors, errors=errors)


@dataclass(frozen=True, slots=True)
class JobResult:
    """What every job returns besides its own result: the requests it made to the hub (and how many failed)."""

    requests: int = 0
    errors: int = 0


Result = TypeVar("Result", bound=JobResult)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a job did not finish, and whether a later try can help."""

    kind: FailureKind
    message: str
    retry: bool
    reason: str | None = None
    """`UpdateRefusedError.reason` when the verification refused."""


def failure_of(exc: Exception) -> Failure:
    """The agent's error as data that crosses the process boundary (the agent's own retry rules)."""
    if isinstance(exc, HubUnreachableError):
        return Failure("unreachable", str(exc)[:500], retry=True)
    if isinstance(exc, UpdateRefusedError):
        # Bytes that did not match may be a damaged download, not a forgery: fetched anew later (as the agent).
        return Failure("refused", exc.message[:500], retry=exc.reason == "hash_mismatch", reason=exc.reason)
    if isinstance(exc, PermissionRefusedError):
        return Failure("permission", str(exc)[:500], retry=False)
    if isinstance(exc, DeviceNotAcceptedError):
        return Failure("not-accepted", str(exc)[:500], retry=exc.retryable)
    if isinstance(exc, HubRefusedError):
        return Failure("hub-refused", str(exc)[:500], retry=False)
    if isinstance(exc, AgentError):
        return Failure("trouble", str(exc)[:500], retry=exc.retryable)
    return Failure("trouble", f"{type(exc).__name__}: {exc}"[:500], retry=True)


@dataclass(frozen=True, slots=True)
class EnrollJob:
    data_dir: Path
    token: str
    arch: Arch
    hostname: str


@dataclass(frozen=True, slots=True)
class Restored:
    """What a device enrolled in an earlier run had installed (`agent.runner.LocalState`), with what it runs."""

    apps: dict[str, Installed]
    failed: dict[str, str]
    environment: dict[str, str]
    running: dict[str, SimRelease]
    etag: str | None = None
    """The target the state is the whole outcome of (`LocalState.etag`): the device polls with it."""


@dataclass(frozen=True, slots=True)
class Enrolled(JobResult):
    """An enrolled device (its key and identity are in the job's directory), or why not."""

    device_id: str | None = None
    fresh: bool = True
    """Enrolled just now; False: an identity from an earlier run was found."""
    restored: Restored | None = None
    failure: Failure | None = None


def enroll_with(client: DeviceClient, job: EnrollJob) -> Enrolled:
    """Enroll once with the agent's code (key, CSR, token); then trust the hub's TUF roots on first use, as it does."""
    fresh = saved_device_id(job.data_dir) is None
    try:
        local = enroll(client, job.data_dir, token=job.token, arch=job.arch, hostname=job.hostname)
        if local.identity is not None and local.identity.status == "pending":
            local = refresh(client, job.data_dir, local)
        if local.identity is None or local.identity.status != "accepted":
            status = local.identity.status if local.identity else "unknown"
            return Enrolled(failure=Failure("not-accepted", f"the device is {status}", retry=False))
        trust = trust_store(job.data_dir)
        if not trust.is_bootstrapped():
            repository_root, director_root = client.tuf_roots(local)
            trust.bootstrap(repository_root=repository_root, director_root=director_root)
    except (AgentError, OSError) as exc:
        return Enrolled(failure=failure_of(exc))
    return Enrolled(device_id=local.device_id, fresh=fresh, restored=None if fresh else restore(job.data_dir))


def restore(data_dir: Path) -> Restored:
    """The installed state the agent's code kept in `data_dir`; apps whose release is unreadable are forgotten."""
    state = load_state(data_dir)
    releases = state.releases()
    return Restored(
        apps={app: entry for app, entry in state.apps.items() if app in releases},
        failed=dict(state.failed),
        environment=dict(state.environment),
        etag=state.etag,
        running={
            app: _sim_release(release, state.apps[app].release_counter, state.environment)
            for app, release in releases.items()
        },
    )


def _sim_release(release: Release, release_counter: int, environment: dict[str, str]) -> SimRelease:
    """A release the device ran before this simulation, as the agent defines its containers."""
    specs = release_specs(release, facts=HostFacts(), environment=environment)
    return SimRelease.of(
        specs,
        version=release.version,
        release_counter=release_counter,
        strategy=release.update.strategy,
        volumes=release.volumes,
    )


def enroll_device(job: EnrollJob) -> Enrolled:
    """`enroll_with` this worker's hub connection."""
    return _in_worker(lambda client: enroll_with(client, job))


@dataclass(frozen=True, slots=True)
class VerifyJob:
    """A device's assignment changed: verify it against what the device has installed."""

    data_dir: Path
    arch: Arch
    installed: dict[str, Installed]
    failed: dict[str, str]
    policy: Policy


@dataclass(frozen=True, slots=True)
class Candidate:
    """A release that verified completely and passed the device's policy: the simulated engine may switch to it."""

    app: str
    mark: str
    release: SimRelease
    entry: Installed
    """What the device keeps installed once it commits."""


@dataclass(frozen=True, slots=True)
class Verified(JobResult):
    """The outcome of a verification job: the plan, the releases that verified, and what stopped it if anything."""

    plan: Choices | None = None
    environment: dict[str, str] | None = None
    candidates: tuple[Candidate, ...] = ()
    failure: Failure | None = None


def verify_with(client: DeviceClient, job: VerifyJob, *, fetcher: FetcherInterface | None = None) -> Verified:
    """Verify the director's assignment and each release to move to, with the agent's `ReleaseVerifier`.

    Each release is downloaded into the device's release area as the agent does it (manifest
    and bundled images, every byte checked against signed lengths and hashes); bundled images
    are then deleted, since the simulated engine loads none. The first refusal stops the job,
    keeping the releases verified before it, as the agent's update loop does.

    Args:
        client: the hub connection.
        job: the device and its installed state.
        fetcher: tests only: another TUF fetcher (e.g. a man in the middle).
    """
    try:
        identity = load_identity(job.data_dir)
        verifier = ReleaseVerifier(
            hub_url=client.base_url,
            trust=trust_store(job.data_dir),
            fetcher=fetcher or client.fetcher(identity),
            device_id=identity.device_id,
            arch=job.arch,
        )
        assigned = verifier.assignments()
    except (AgentError, OSError) as exc:
        return Verified(failure=failure_of(exc))
    environment = next((dict(a.custom.environment) for a in assigned.values()), {})
    plan = choose_updates({app: a.custom for app, a in assigned.items()}, job.installed, job.failed)
    candidates: list[Candidate] = []
    for app in plan.update:
        custom = assigned[app].custom
        current = job.installed.get(app)
        directory = job.data_dir / "releases" / app / f"{custom.release_counter}-{custom.version}"
        try:
            _prune(directory.parent, keep={directory.name} | _names(current))
            if directory.exists():
                shutil.rmtree(directory)  # an earlier download of this release: verify it afresh
            release = verifier.verify(
                app, installed_counter=current.release_counter if current else None, install_dir=directory
            )
            specs = checked_specs(release.manifest, job.policy, facts=HostFacts(), environment=environment)
            shutil.rmtree(release.directory / "images", ignore_errors=True)
        except (AgentError, PermissionRefusedError, OSError) as exc:
            return Verified(plan=plan, environment=environment, candidates=tuple(candidates), failure=failure_of(exc))
        entry = Installed(
            release.version, release.release_counter, str(directory), previous=current.directory if current else None
        )
        mark = release_mark(custom.release_counter, custom.version, custom.retry)
        manifest = release.manifest
        running = SimRelease.of(
            specs,
            version=release.version,
            release_counter=release.release_counter,
            strategy=manifest.update.strategy,
            volumes=manifest.volumes,
        )
        candidates.append(Candidate(app, mark, running, entry))
    return Verified(plan=plan, environment=environment, candidates=tuple(candidates))


def verify_device(job: VerifyJob) -> Verified:
    """`verify_with` this worker's hub connection."""
    return _in_worker(lambda client: verify_with(client, job))


def _names(entry: Installed | None) -> set[str]:
    if entry is None:
        return set()
    return {Path(d).name for d in (entry.directory, entry.previous) if d}


def _prune(app_dir: Path, *, keep: set[str]) -> None:
    """Remove an app's releases other than the running, the previous and the coming one (as the agent keeps two)."""
    if not app_dir.is_dir():
        return
    for old in app_dir.iterdir():
        if old.name not in keep and not old.name.startswith(".staging-"):
            shutil.rmtree(old, ignore_errors=True)

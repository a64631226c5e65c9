"""The agent's loop: poll the target state, verify, reconcile, report; back off while the hub is away.

One cycle at a time (no concurrency inside the agent): long-poll `/device/target` (the hub
holds it until the assignment changes or the wait ends); when something changed, verify
the director's assignment and each assigned release (`agent.verify`), check the device's
policy, reconcile the engine, and report. While the hub is unreachable the last verified
releases keep running (the engine is still reconciled against them) and the wait grows
exponentially with full jitter up to a ceiling. Only outbound connections.
"""

from __future__ import annotations

import json
import logging
import platform
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from edgefleet import __version__
from edgefleet.agent.client import DeviceClient
from edgefleet.agent.errors import AgentError, EngineError, HubUnreachableError, UpdateRefusedError
from edgefleet.agent.identity import LocalIdentity
from edgefleet.agent.journal import Journal
from edgefleet.agent.plan import describe
from edgefleet.agent.policy import Policy
from edgefleet.agent.reconcile import Desired, Engine, PermissionRefusedError, checked_specs, reconcile
from edgefleet.agent.spec import HostFacts
from edgefleet.agent.transaction import TransactionEngine, Updater
from edgefleet.agent.verify import ReleaseVerifier, TrustStore
from edgefleet.crypto import write_public_file
from edgefleet.manifest import ManifestError, Release, parse_manifest
from edgefleet.releases import bundle_path

log = logging.getLogger(__name__)
STATE_FILE = "installed.json"
JOURNAL_FILE = "journal.db"


def next_delay(attempt: int, *, initial: float, ceiling: float, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(ceiling, initial * 2**attempt)]."""
    return float(rand() * min(ceiling, initial * 2.0 ** min(attempt, 32)))


def host_facts() -> HostFacts:
    """Device nodes present on this machine that permissions may map to."""
    dev = Path("/dev")
    return HostFacts(
        video_devices=tuple(sorted(str(p) for p in dev.glob("video*"))),
        gpio_devices=tuple(sorted(str(p) for p in dev.glob("gpiochip*"))),
    )


@dataclass(frozen=True)
class Installed:
    """A verified release the device keeps on disk, per app."""

    version: str
    release_counter: int
    directory: str


class AgentEngine(Engine, TransactionEngine, Protocol):
    """Everything the agent asks of its engine (reconciling, update transactions, reports)."""

    def status(self) -> dict[str, dict[str, dict[str, Any]]]: ...


def bundles_of(release: Release, directory: Path) -> dict[str, Path]:
    """Image reference (name@sha256:...) -> the verified OCI archive of it in an installed release."""
    found = {}
    for service in release.services:
        image = service.compose.image
        archive = directory / bundle_path(release.app, release.version, image).split("/", 2)[2]
        if archive.is_file():
            found[image] = archive
    return found


@dataclass
class LocalState:
    """What the device last verified: per app the installed release, and the signed environment."""

    apps: dict[str, Installed] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """App -> "COUNTER-VERSION" of a release that failed here: not tried again until something else is assigned."""
    _parsed: dict[str, Release] | None = field(default=None, repr=False, compare=False)

    def releases(self) -> dict[str, Release]:
        """The installed releases' manifests (each was verified before it was installed), read once."""
        if self._parsed is None:
            self._parsed = {}
            for app, entry in self.apps.items():
                try:
                    self._parsed[app] = parse_manifest(
                        (Path(entry.directory) / "compose.yaml").read_bytes(), source=entry.directory
                    )
                except (OSError, ManifestError) as exc:
                    log.error("installed release of %s is unusable: %s", app, exc)
        return self._parsed

    def desired(self, policy: Policy, facts: HostFacts) -> Desired:
        """What the engine must run now.

        Raises:
            EngineError: an installed release is unreadable; nothing is touched rather than its app removed.
        """
        releases = self.releases()
        unreadable = sorted(set(self.apps) - set(releases))
        if unreadable:
            names = ", ".join(unreadable)
            raise EngineError(f"installed release of {names} is unreadable; leaving the engine as it is")
        return Desired(releases=releases, policy=policy, facts=facts, environment=self.environment)

    def bundles(self) -> dict[str, Path]:
        """Every installed release's verified OCI archives, by image reference."""
        found: dict[str, Path] = {}
        for app, release in self.releases().items():
            found.update(bundles_of(release, Path(self.apps[app].directory)))
        return found


def load_state(data_dir: Path) -> LocalState:
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text())
        return LocalState(
            apps={app: Installed(**entry) for app, entry in raw["apps"].items()},
            environment={str(k): str(v) for k, v in raw.get("environment", {}).items()},
            failed={str(k): str(v) for k, v in raw.get("failed", {}).items()},
        )
    except FileNotFoundError:
        return LocalState()
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring unreadable %s: %s", STATE_FILE, exc)
        return LocalState()


def save_state(data_dir: Path, state: LocalState) -> None:
    """Atomically (temp file, fsync, rename)."""
    body: dict[str, Any] = {"apps": {app: vars(entry) for app, entry in state.apps.items()}}
    body |= {"environment": state.environment, "failed": state.failed}
    write_public_file(data_dir / STATE_FILE, json.dumps(body, indent=1, sort_keys=True).encode())


def trust_store(data_dir: Path) -> TrustStore:
    """Where the device keeps its trusted TUF metadata."""
    return TrustStore(data_dir / "tuf")


@dataclass
class Agent:
    """One device's agent: identity, hub connection, engine, policy and local state."""

    client: DeviceClient
    identity: LocalIdentity
    engine: AgentEngine
    data_dir: Path
    policy: Policy
    arch: str
    facts: HostFacts = field(default_factory=host_facts)
    poll_wait: float = 60.0
    etag: str | None = None
    last_error: str | None = None
    retry: bool = False
    """An update could not be carried out (engine or disk trouble): poll afresh next cycle."""
    state: LocalState = field(init=False)
    journal: Journal = field(init=False)

    def __post_init__(self) -> None:
        self.state = load_state(self.data_dir)
        self.journal = Journal(self.data_dir / JOURNAL_FILE)

    def updater(self) -> Updater:
        return Updater(self.engine, self.journal, clock=lambda: datetime.now(UTC))

    def recover(self) -> None:
        """Before anything else: roll back any update a crash or power loss interrupted."""
        for tx in self.updater().recover():
            self.last_error = f"update of {tx.app} to {tx.to_release} was interrupted and rolled back"
            log.warning("%s", self.last_error)

    def update(self) -> None:
        """Verify the director's assignment; move each app whose release changed to it, as a transaction."""
        verifier = ReleaseVerifier(
            hub_url=self.client.base_url,
            trust=trust_store(self.data_dir),
            fetcher=self.client.fetcher(self.identity),
            device_id=self.identity.device_id,
            arch=self.arch,
        )
        assigned = verifier.assignments()
        environment = next((dict(a.custom.environment) for a in assigned.values()), {})
        installed = dict(self.state.apps)
        failed = {app: mark for app, mark in self.state.failed.items() if app in assigned}
        for app, assignment in sorted(assigned.items()):
            custom = assignment.custom
            mark = f"{custom.release_counter}-{custom.version}"
            current = installed.get(app)
            if current and (current.version, current.release_counter) == (custom.version, custom.release_counter):
                continue
            if failed.get(app) == mark:
                # Failed here before: stay on the previous release, and keep saying so, until something
                # else is assigned (no retry loops).
                staying = current.version if current else "nothing"
                self.last_error = f"{app} {custom.version} failed on this device; staying on {staying}"
                continue
            failed.pop(app, None)
            directory = self.data_dir / "releases" / app / mark
            if directory.exists():
                shutil.rmtree(directory)  # an earlier download of this release: verify it afresh
            release = verifier.verify(
                app, installed_counter=current.release_counter if current else None, install_dir=directory
            )
            # The new release's bundled images are loaded from its verified archives, not pulled.
            self.engine.bundles.update(bundles_of(release.manifest, release.directory))
            outcome = self._switch(app, release.manifest, current, environment)
            if outcome == "committed":
                installed[app] = Installed(release.version, release.release_counter, str(release.directory))
            elif outcome == "failed":
                failed[app] = mark
            # Recorded per app: a later app's trouble never undoes an update that already committed.
            self.state = LocalState(apps=dict(installed), environment=environment, failed=dict(failed))
            save_state(self.data_dir, self.state)
        for app in set(installed) - set(assigned):
            del installed[app]
        self.state = LocalState(apps=installed, environment=environment, failed=failed)
        save_state(self.data_dir, self.state)

    def _switch(
        self, app: str, release: Release, current: Installed | None, environment: dict[str, str]
    ) -> Literal["committed", "failed", "retry"]:
        """Move `app` to a verified release as a transaction; on failure the reason is reported."""
        made = checked_specs(release, self.policy, facts=self.facts, environment=environment)
        specs = {s.service: s for s in made}
        outcome = self.updater().update(
            app,
            specs,
            from_release=current.version if current else None,
            to_release=release.version,
            volumes=release.volumes,
            health_window=release.update.health_window,
            restart_limit=min((s.restart_max for s in specs.values()), default=0),
        )
        if outcome.committed:
            return "committed"
        self.last_error = (
            f"update of {app} to {release.version} failed and was rolled back: {outcome.transaction.error}"[:500]
        )
        log.error("%s", self.last_error)
        if outcome.retryable:
            self.retry = True
            return "retry"
        return "failed"

    def apply(self) -> int:
        """Reconcile the engine to the installed releases; returns the number of steps taken.

        Raises:
            EngineError: an installed release is unreadable; nothing is touched rather than its app removed.
        """
        desired = self.state.desired(self.policy, self.facts)
        self.engine.bundles.update(self.state.bundles())
        return len(reconcile(self.engine, desired, on_step=lambda step: log.info("%s", describe(step))))

    def cycle(self) -> bool:
        """One poll-verify-reconcile-report round; returns whether the target changed.

        Raises:
            HubUnreachableError: the hub could not be reached (the caller backs off).
        """
        target, etag = self.client.target_state(self.identity, wait=self.poll_wait, etag=self.etag)
        changed = target is not None
        if changed or self.retry:
            self.last_error, self.retry = None, False
            try:
                self.update()
            except UpdateRefusedError as exc:
                self.last_error = f"update refused ({exc.reason}): {exc.message}"[:500]
            except PermissionRefusedError as exc:
                self.last_error = str(exc)[:500]
            except HubUnreachableError:
                self.retry = True  # the poll said "changed"; a 304 next time must not hide that
                raise
            except (AgentError, OSError) as exc:
                self.last_error, self.retry = f"update could not be carried out: {exc}"[:500], True
            if self.last_error:
                log.error("%s", self.last_error)
            if not self.retry:
                self.etag = etag
        try:
            self.apply()
        except PermissionRefusedError as exc:
            self.last_error = str(exc)[:500]
            log.error("%s", self.last_error)
        except EngineError as exc:
            self.last_error = f"engine: {exc.message}"[:500]
            log.error("%s", self.last_error)
        self.report()
        return changed

    def report(self) -> None:
        """State the device's twin: running releases, services, agent, host, last error."""
        apps: dict[str, Any] = {}
        for app, entry in self.state.apps.items():
            apps[app] = {"version": entry.version, "release_counter": entry.release_counter}
        for app, services in self.engine.status().items():
            apps.setdefault(app, {})["services"] = services
        usage = shutil.disk_usage(self.data_dir)
        properties = {
            "apps": apps,
            "agent_version": __version__,
            "os": f"{platform.system()} {platform.release()}"[:64],
            "arch": self.arch,
            "disk_free": usage.free,
            "mem_available": _mem_available(),
            "last_error": self.last_error,
        }
        try:
            self.client.report(self.identity, properties)
        except AgentError as exc:
            log.warning("report failed: %s", exc)


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def run(
    agent: Agent, *, initial: float, ceiling: float, sleep: Callable[[float], None], stop: Callable[[], bool]
) -> None:
    """Cycle until `stop()`; while the hub is unreachable, keep the engine reconciled and back off."""
    attempt = 0
    while not stop():
        try:
            agent.cycle()
            attempt = 0
        except HubUnreachableError as exc:
            delay = next_delay(attempt, initial=initial, ceiling=ceiling)
            log.warning("hub unreachable (%s); retrying in %.1fs", exc, delay)
            attempt += 1
            try:
                agent.apply()
            except (PermissionRefusedError, EngineError) as apply_error:
                log.error("%s", apply_error)
            sleep(delay)

"""The agent's loop: poll the target state, verify, reconcile, report; back off while the hub is away.

One cycle at a time (no concurrency inside the agent): deliver buffered events, long-poll
`/device/target` (the hub holds it until the assignment changes or the wait ends); when
something changed, verify the director's assignment and each assigned release
(`agent.verify`), check the device's policy, move each changed app as a transaction
(`agent.transaction`), reconcile the engine, and report. Every update outcome becomes an
event in the on-disk outbox (`agent.outbox`), delivered in order when the hub is reachable.
While the hub is unreachable the last verified releases keep running (the engine is still
reconciled against them), events and the latest state report wait on disk, and the wait
grows exponentially with full jitter up to a ceiling. Only outbound connections.

After a commit the agent keeps the new and the previous release of the app (files and
images: going back to it pulls no image, though its files are verified and fetched again)
and removes older ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import random
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from edgefleet import __version__
from edgefleet.agent import heap
from edgefleet.agent.bounds import DEFAULT_BOUNDS, Bounds
from edgefleet.agent.client import ETAG, DeviceClient
from edgefleet.agent.decide import Installed, choose_updates, release_mark
from edgefleet.agent.engine.info import EngineInfo
from edgefleet.agent.enroll import renew_if_due
from edgefleet.agent.errors import AgentError, EngineError, HubRefusedError, HubUnreachableError, UpdateRefusedError
from edgefleet.agent.identity import LocalIdentity
from edgefleet.agent.journal import INTERRUPTED, Ending, Journal, Transaction
from edgefleet.agent.manifests import read_installed
from edgefleet.agent.outbox import Outbox
from edgefleet.agent.plan import describe
from edgefleet.agent.policy import Policy
from edgefleet.agent.progress import DownloadProgress
from edgefleet.agent.reconcile import Desired, Engine, PermissionRefusedError, checked_specs, reconcile
from edgefleet.agent.report import app_reports, report_due
from edgefleet.agent.spec import HostFacts
from edgefleet.agent.transaction import FaultHook, Status, TransactionEngine, Updater
from edgefleet.agent.trust import TrustMode
from edgefleet.agent.truststore import TrustStore
from edgefleet.crypto import write_public_file
from edgefleet.manifest import ManifestError, Release
from edgefleet.protocol import (
    MAX_LOGS_CHARS,
    MAX_REASON_CHARS,
    EngineReport,
    ReportedState,
    UpdateEvent,
    UpdateStatus,
)
from edgefleet.releases import bundle_path

log = logging.getLogger(__name__)
ENGINE_ERROR = "engine: "
"""How a `last_error` about the engine itself begins (it is cleared once the engine answers again)."""
STATE_FILE = "installed.json"
JOURNAL_FILE = "journal.db"
OUTBOX_FILE = "outbox.db"


def next_delay(attempt: int, *, initial: float, ceiling: float, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(ceiling, initial * 2**attempt)]."""
    return float(rand() * min(ceiling, initial * 2.0 ** min(attempt, 32)))


def host_facts(*, protected: tuple[str, ...] = ()) -> HostFacts:
    """Device nodes present on this machine that permissions may map to; `protected`: its paths never shared."""
    dev = Path("/dev")
    return HostFacts(
        video_devices=tuple(sorted(str(p) for p in dev.glob("video*"))),
        gpio_devices=tuple(sorted(str(p) for p in dev.glob("gpiochip*"))),
        protected_paths=protected,
    )


class AgentEngine(Engine, TransactionEngine, Protocol):
    """Everything the agent asks of its engine (reconciling, update transactions, reports)."""

    def status(self) -> dict[str, dict[str, dict[str, Any]]]: ...

    def identify(self) -> EngineInfo: ...

    def remove_image(self, image: str) -> bool: ...


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
    etag: str | None = None
    """The target state (its ETag) this state is the whole outcome of: a restarted agent polls with it, and
    verifies nothing while it is unchanged. None: verify at the next start (kept with the installed record,
    so that losing one loses the other)."""
    _parsed: dict[str, Release] | None = field(default=None, repr=False, compare=False)

    def releases(self) -> dict[str, Release]:
        """The installed releases' manifests (each was verified before it was installed), read once."""
        if self._parsed is None:
            self._parsed = {}
            for app, entry in self.apps.items():
                try:
                    self._parsed[app] = read_installed(Path(entry.directory))
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
        """The verified bundle archives of every kept release (installed and previous), by image reference.

        The previous releases' count too: their images stay on the engine, and Docker Engine
        knows a loaded image only through its bundle (`DockerEngine` finds it by config digest).
        """
        found: dict[str, Path] = {}
        for entry in self.apps.values():
            if entry.previous:
                try:
                    previous = read_installed(Path(entry.previous))
                except (OSError, ManifestError):
                    previous = None  # gone or unreadable: its images are pulled if ever needed again
                if previous is not None:
                    found.update(bundles_of(previous, Path(entry.previous)))
        for app, release in self.releases().items():
            found.update(bundles_of(release, Path(self.apps[app].directory)))
        return found


def load_state(data_dir: Path) -> LocalState:
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text())
        etag = raw.get("etag")
        return LocalState(
            apps={app: Installed(**entry) for app, entry in raw["apps"].items()},
            environment={str(k): str(v) for k, v in raw.get("environment", {}).items()},
            failed={str(k): str(v) for k, v in raw.get("failed", {}).items()},
            etag=etag if isinstance(etag, str) and ETAG.fullmatch(etag) else None,
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
    if state.etag is not None:
        body["etag"] = state.etag
    write_public_file(data_dir / STATE_FILE, json.dumps(body, indent=1, sort_keys=True).encode())


def trust_store(data_dir: Path) -> TrustStore:
    """Where the device keeps its trusted TUF metadata."""
    return TrustStore(data_dir / "tuf")


REFUSED_FOR_GOOD = frozenset({400, 413, 422})
"""Statuses that say an event batch itself is bad: sending it again would never succeed."""
RETRIED_REFUSALS = frozenset({"hash_mismatch", "expired", "rollback_attack"})
"""Refusals tried again later by themselves; others wait for a new assignment (a forgery stays refused)."""
EVENT_STATUS: dict[Ending | Status, UpdateStatus] = {
    "committed": "committed",
    "failed": "failed",
    "retry": "rolled-back",
    "interrupted": "interrupted",
    "no-space": "no-space",
}
"""The event an update's end becomes (`protocol.UpdateStatus`): a journaled ending, or an `Outcome`'s status."""


def printable(text: str, limit: int) -> str:
    """Text the hub accepts: no NUL, valid UTF-8, at most `limit` characters (the end is kept: it says most)."""
    clean = text.replace("\x00", "").encode("utf-8", errors="replace").decode("utf-8")
    return clean[-limit:]


def event(
    tx: Transaction | None,
    app: str,
    status: UpdateStatus,
    *,
    from_release: str | None = None,
    to_release: str | None = None,
    service: str | None = None,
    reason: str | None = None,
    logs: str | None = None,
    max_bytes: int = DEFAULT_BOUNDS.event_bytes,
) -> dict[str, Any]:
    """An update outcome as the hub records it: a `protocol.UpdateEvent` (the outbox numbers it), as JSON.

    The releases are the transaction's when there is one. Free text is cut to what the hub
    takes, and further to the outbox's bound (`max_bytes`) however it encodes: the logs lose
    their oldest half at a time, then the reason its end (to 500 characters, then by halves).

    Raises:
        ValueError: a field the hub would refuse (a release or app name not as verified metadata has them).
    """
    if tx is not None:
        from_release, to_release = tx.from_release, tx.to_release
    reason = None if reason is None else printable(reason, MAX_REASON_CHARS)
    logs = None if logs is None else printable(logs, MAX_LOGS_CHARS)
    at = datetime.now(UTC)
    while True:
        told = UpdateEvent.model_validate(
            {
                "at": at,
                "app": app,
                "status": status,
                "from_release": from_release,
                "to_release": to_release,
                "service": service,
                "reason": reason,
                "logs": logs,
            }
        ).model_dump(mode="json", exclude_none=True)
        if len(json.dumps(told, sort_keys=True)) <= max_bytes:
            return told
        if logs:
            logs = logs[len(logs) // 2 + 1 :]
        elif reason:
            reason = reason[: min(500, len(reason) // 2)]
        else:
            return told  # the outbox refuses it, and says why


def outcome_event(tx: Transaction, *, max_bytes: int = DEFAULT_BOUNDS.event_bytes) -> dict[str, Any]:
    """The event a finished transaction becomes, from what its journal entry holds (pure but for the time)."""
    outcome = tx.outcome or "interrupted"
    if outcome == "committed":
        return event(tx, tx.app, "committed", max_bytes=max_bytes)
    if outcome != "failed":
        return event(tx, tx.app, EVENT_STATUS[outcome], reason=tx.error, max_bytes=max_bytes)
    interrupted = tx.detail.get("interrupted_in")
    reason = (tx.error or "") + (f" (its rollback was {INTERRUPTED}{interrupted})" if interrupted else "")
    service, logs = tx.detail.get("service"), tx.detail.get("logs")
    return event(tx, tx.app, "failed", reason=reason, service=service, logs=logs, max_bytes=max_bytes)


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
    """An update could not be carried out (engine or disk trouble, the hub lost mid-update): try it again."""
    retry_at: float = 0.0
    """When (`clock`) the update is tried again; the delay doubles with each failed try (`retries`)."""
    retries: int = 0
    clock: Callable[[], float] = time.monotonic
    bounds: Bounds = DEFAULT_BOUNDS
    """Every limit and timing of the agent (`agent.bounds`): the settings' ``[bounds]``."""
    fault: FaultHook | None = None
    """Tests only: called at each journaled phase (`agent.transaction`)."""
    progress: DownloadProgress | None = None
    """Hears of each chunk of a release file downloaded (`agent.progress`): log lines or a terminal bar."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """Wall-clock time, for the certificate's expiry (`clock` is monotonic, for delays)."""
    root_trust: TrustMode | None = None
    """How the image repository's root came to be trusted (`agent.trust`), reported in the twin."""
    state: LocalState = field(init=False)
    journal: Journal = field(init=False)
    outbox: Outbox = field(init=False)
    reported: tuple[dict[str, Any], float] | None = field(default=None, init=False)
    """The last state report the hub took, and when (`clock`): an unchanged one is not sent again (`agent.report`)."""

    def __post_init__(self) -> None:
        self.state = load_state(self.data_dir)
        self.etag = self.etag or self.state.etag
        self.journal = Journal(self.data_dir / JOURNAL_FILE, bounds=self.bounds)
        self.outbox = Outbox(self.data_dir / OUTBOX_FILE, bounds=self.bounds)

    def updater(self) -> Updater:
        return Updater(self.engine, self.journal, clock=lambda: datetime.now(UTC), fault=self.fault, bounds=self.bounds)

    def recover(self) -> None:
        """Before anything else: roll back any update a crash or power loss interrupted, settle the finished ones.

        Half-verified files are dropped; an update that ended but whose bookkeeping the crash
        cut short (`settle`) is recorded now, not carried out again.
        """
        for staging in (self.data_dir / "releases").glob("*/.staging-*"):
            shutil.rmtree(staging, ignore_errors=True)  # a verification the crash cut short: never used
        self.updater().recover()
        self.settle()

    def settle(self) -> None:
        """Record what each finished update means: the installed release, a failure, the event for the hub.

        From the journal alone, each step repeatable (the floor, the installed record, the failure
        mark, the event keyed by its transaction), the journal's `settled` mark last: killed
        anywhere in between, the next start does it again, and the hub hears of it once.
        """
        for tx in self.journal.unsettled():
            self._settle(tx)
            if self.fault is not None:
                self.fault("settling")
            self.journal.settle(tx)
            if tx.outcome == "committed":
                self._prune(tx.app)

    def _settle(self, tx: Transaction) -> None:
        app, outcome = tx.app, tx.outcome
        apps, failed = dict(self.state.apps), dict(self.state.failed)
        install = tx.detail.get("install")
        if outcome == "committed" and install is not None:
            self.journal.set_floor(app, int(install["release_counter"]))
            apps[app] = Installed(**install)
            failed.pop(app, None)
        elif outcome == "failed" and tx.detail.get("mark"):
            failed[app] = str(tx.detail["mark"])
        self.state = LocalState(apps=apps, environment=self.state.environment, failed=failed)  # its ETag: none
        self.etag = None  # what the device runs changed since: the next poll asks for the target afresh
        save_state(self.data_dir, self.state)
        told = outcome_event(tx, max_bytes=self.bounds.event_bytes)
        self.outbox.add(told, key=f"transaction {tx.id} of {tx.started_at.isoformat()}")
        if outcome == "committed":
            return
        what = "was interrupted and rolled back" if outcome == "interrupted" else "failed and was rolled back"
        self.last_error = f"update of {app} to {tx.to_release} {what}: {told.get('reason')}"[:500]
        log.error("%s", self.last_error)
        self.retry = self.retry or outcome == "retry"

    def update(self) -> None:
        """Verify the director's assignment; move each app whose release changed to it, as a transaction."""
        from edgefleet.agent.verify import ReleaseVerifier  # python-tuf: loaded when a target first changes

        verifier = ReleaseVerifier(
            hub_url=self.client.base_url,
            trust=trust_store(self.data_dir),
            fetcher=self.client.fetcher(self.identity, partial_dir=self.data_dir / "partial", progress=self.progress),
            device_id=self.identity.device_id,
            arch=self.arch,
            bounds=self.bounds,
        )
        assigned = verifier.assignments()
        environment = next((dict(a.custom.environment) for a in assigned.values()), {})
        targets = {app: a.custom for app, a in assigned.items()}
        # A rollback an engine error cut short is finished and settled before anything is chosen: a
        # release judged failed is then marked failed, and not started again.
        self.updater().finish_rollbacks()
        self.settle()
        chosen = choose_updates(targets, self.state.apps, self.state.failed)
        self.state = LocalState(apps=dict(self.state.apps), environment=environment, failed=dict(chosen.failed))
        for app in chosen.staying:
            # Failed here before: stay on the previous release, and keep saying so, until something
            # else is assigned or an operator asks for a retry (no retry loops).
            current = self.state.apps.get(app)
            staying = current.version if current else "nothing"
            self.last_error = f"{app} {targets[app].version} failed on this device; staying on {staying}"
        for app in chosen.update:
            custom = targets[app]
            mark = release_mark(custom.release_counter, custom.version, custom.retry)
            current = self.state.apps.get(app)
            if self._given_up(app, mark, current, custom.version):
                continue
            directory = self.data_dir / "releases" / app / f"{custom.release_counter}-{custom.version}"
            held = self._held()
            aside = directory.parent / f".staging-earlier-{directory.name}"
            shutil.rmtree(aside, ignore_errors=True)
            if directory.exists():
                # An earlier download of this release (a retry, or going back to the previous release): it is
                # verified afresh, and its archives are offered for reuse (checked again where they land).
                directory.rename(aside)
                held += sorted((aside / "images").glob("*"))
            try:
                floor = self._floor(app, current)
                release = verifier.verify(app, installed_counter=floor, install_dir=directory, held=held)
            finally:
                shutil.rmtree(aside, ignore_errors=True)
            # The new release's bundled images are loaded from its verified archives, not pulled.
            bundles = bundles_of(release.manifest, release.directory)
            self.engine.bundles.update(bundles)
            install = Installed(
                release.version,
                release.release_counter,
                str(release.directory),
                previous=current.directory if current else None,
            )
            # Recorded per app (`settle`): a later app's trouble never undoes an update that already committed.
            self._switch(app, release.manifest, current, install, bundles, mark)
        installed = dict(self.state.apps)
        for app in chosen.removed:
            # Its floor stays in the journal: assigned again later, it still cannot go back unmarked.
            self.journal.set_floor(app, self._floor(app, installed[app]) or 0)
            del installed[app]
        self.state = LocalState(apps=installed, environment=environment, failed=self.state.failed)
        save_state(self.data_dir, self.state)

    def _given_up(self, app: str, mark: str, current: Installed | None, version: str) -> bool:
        """Whether tries of this assignment ended with the agent or device gone too often; then it is failed.

        Each try ended with the agent or the device gone (a release that exhausts memory, a
        watchdog reboot): trying once more would only do it again. Failed, as if unhealthy.
        """
        interrupted = self.journal.interruptions(app, mark)
        if interrupted < self.bounds.max_interruptions:
            return False
        staying = current.version if current else "nothing"
        reason = f"interrupted {interrupted} times in a row while updating (the agent or device stopped)"
        self.last_error = f"{app} {version} failed on this device: {reason}; staying on {staying}"
        log.error("%s", self.last_error)
        last = self.journal.last(app)
        self.outbox.add(
            event(
                None,
                app,
                "failed",
                reason=reason,
                from_release=current.version if current else None,
                to_release=version,
                max_bytes=self.bounds.event_bytes,
            ),
            key=f"given up after transaction {last.id} of {last.started_at.isoformat()}" if last else None,
        )
        self.state.failed[app] = mark
        save_state(self.data_dir, self.state)
        return True

    def _held(self) -> list[Path]:
        """The bundle archives of every release the device keeps: a release bundling the same image reuses its file."""
        try:
            return sorted(set(self.state.bundles().values()))
        except OSError:
            return []

    def _floor(self, app: str, current: Installed | None) -> int | None:
        """The lowest release counter `app` may move to without a signed rollback mark (None: nothing installed yet).

        The journal's floor, or the installed record's counter for a release installed before
        floors were kept, whichever is higher.
        """
        counters = [c for c in (self.journal.floor(app), current.release_counter if current else None) if c is not None]
        return max(counters) if counters else None

    def _switch(
        self,
        app: str,
        release: Release,
        current: Installed | None,
        install: Installed,
        bundles: dict[str, Path],
        mark: str,
    ) -> None:
        """Move `app` to a verified release as a transaction, then settle it (`settle`)."""
        made = checked_specs(release, self.policy, facts=self.facts, environment=self.state.environment)
        specs = {s.service: s for s in made}
        outcome = self.updater().update(
            app,
            specs,
            from_release=current.version if current else None,
            to_release=release.version,
            volumes=release.volumes,
            health_window=release.update.health_window,
            restart_limit=min((s.restart_max for s in specs.values()), default=0),
            strategy=release.update.strategy,
            image_bytes={image: archive.stat().st_size for image, archive in bundles.items()},
            detail={"mark": mark, "install": vars(install)},
        )
        if outcome.transaction is not None and outcome.transaction.finished:
            self.settle()
            return
        # Nothing was changed (too little disk, or the engine could not be read), or the journal could not
        # record the end (a full disk): the outcome itself is told, and a failure is remembered.
        from_release = current.version if current else None
        status = EVENT_STATUS[outcome.status]
        failing = outcome.verdict.service if outcome.verdict and outcome.status == "failed" else None
        told = event(
            None,
            app,
            status,
            from_release=from_release,
            to_release=release.version,
            reason=outcome.reason,
            service=failing,
            logs=outcome.logs,
            max_bytes=self.bounds.event_bytes,
        )
        self.outbox.add(told)
        if outcome.status == "failed":
            self.state.failed[app] = mark
            save_state(self.data_dir, self.state)
        what = {"no-space": "could not be made: not enough disk", "failed": "failed and was rolled back"}.get(
            outcome.status, "could not be carried out"
        )
        self.last_error = f"update of {app} to {release.version} {what}: {outcome.reason}"[:500]
        log.error("%s", self.last_error)
        self.retry = outcome.status != "failed"

    def _prune(self, app: str) -> None:
        """Remove the app's releases other than the running and the previous one, and their images."""
        entry = self.state.apps[app]
        keep_dirs = {entry.directory, entry.previous}
        kept_images = self._images_of(d for e in self.state.apps.values() for d in (e.directory, e.previous) if d)
        for directory in sorted((self.data_dir / "releases" / app).iterdir()):
            if str(directory) in keep_dirs or directory.name.startswith(".staging-"):
                continue
            for image in sorted(self._images_of([str(directory)]) - kept_images):
                if self.engine.remove_image(image):
                    log.info("removed image %s of an old release of %s", image, app)
            self.engine.bundles = {i: a for i, a in self.engine.bundles.items() if not a.is_relative_to(directory)}
            shutil.rmtree(directory, ignore_errors=True)

    @staticmethod
    def _images_of(directories: Iterable[str]) -> set[str]:
        images: set[str] = set()
        for directory in directories:
            try:
                release = read_installed(Path(directory))
            except (OSError, ManifestError):
                continue
            images.update(service.compose.image for service in release.services)
        return images

    def apply(self) -> int:
        """Reconcile the engine to the installed releases; returns the number of steps taken.

        Raises:
            EngineError: an installed release is unreadable; nothing is touched rather than its app removed.
        """
        desired = self.state.desired(self.policy, self.facts)
        self.engine.bundles.update(self.state.bundles())
        return len(reconcile(self.engine, desired, on_step=lambda step: log.info("%s", describe(step))))

    def cycle(self) -> bool:
        """One deliver-poll-verify-reconcile-report round; returns whether the target changed.

        Raises:
            HubUnreachableError: the hub could not be reached (the caller backs off).
        """
        self.renew()
        try:
            self.deliver()
        except HubUnreachableError:
            raise
        except AgentError as exc:  # the outbox's file in trouble: polling and updating go on without it
            log.error("events not delivered: %s", exc)
        target, etag = self.client.target_state(self.identity, wait=self.poll_wait, etag=self.etag)
        changed = target is not None
        if changed or (self.retry and self.clock() >= self.retry_at):
            self.last_error, self.retry = None, False
            try:
                self.update()
            except UpdateRefusedError as exc:
                self.last_error = f"update refused ({exc.reason}): {exc.message}"[:500]
                # Tried again later, with the same growing delays as engine trouble, when the cause may
                # go away without a new assignment: bytes that did not match may be a damaged download
                # (kept across a power loss), not a forgery; metadata expired or fast-forwarded by a
                # compromised hub is cured by the hub's repair (re-signing, or its key rotation).
                self.retry = exc.reason in RETRIED_REFUSALS
            except PermissionRefusedError as exc:
                self.last_error = str(exc)[:500]
            except HubUnreachableError:
                # The poll said "changed"; a 304 next time must not hide that. The caller's backoff paces it.
                self.retry, self.retry_at = True, 0.0
                raise
            except (AgentError, OSError) as exc:
                self.last_error, self.retry = f"update could not be carried out: {exc}"[:500], True
            if self.last_error:
                log.error("%s", self.last_error)
            if self.retry:  # disk or engine trouble: try again later, less often each time (no retry loops)
                b = self.bounds
                delay = next_delay(
                    self.retries, initial=b.update_retry_first, ceiling=b.update_retry_max, rand=lambda: 1.0
                )
                self.retry_at = self.clock() + delay  # no jitter: one device's own retries, not a fleet's
                self.retries += 1
            else:
                self.retries = 0
            self.etag = etag
            self._remember(None if self.retry or self.last_error else etag)
            heap.trim()  # what verifying and updating used goes back to the system; at rest the agent only polls
        try:
            self.apply()
            if self.last_error is not None and self.last_error.startswith(ENGINE_ERROR):
                self.last_error = None  # the engine answers again
        except PermissionRefusedError as exc:
            self.last_error = str(exc)[:500]
            log.error("%s", self.last_error)
        except EngineError as exc:
            self.last_error = f"{ENGINE_ERROR}{exc.message}"[:500]
            log.error("%s", self.last_error)
        self.report()
        return changed

    def _remember(self, etag: str | None) -> None:
        """Keep `etag` with the installed record: the target it is the outcome of (None: verify after a restart).

        Only a target processed to its end without an error is kept: after a restart an unchanged
        target is then answered 304 and costs no verification, while one that met an error (a
        permission the device's policy may grant by then, a refusal) is verified again.
        """
        if self.state.etag == etag:
            return
        self.state = replace(self.state, etag=etag)
        try:
            save_state(self.data_dir, self.state)
        except OSError as exc:  # a full disk: the ETag stays in memory; a restart verifies the target again
            log.error("cannot keep the target's ETag: %s", exc)

    def renew(self) -> None:
        """Renew the device certificate in its last 30 days (same key, fresh CSR); trouble is retried next cycle.

        Raises:
            HubUnreachableError: the hub could not be reached (the caller backs off).
        """
        try:
            before = timedelta(seconds=self.bounds.renew_before)
            renewed = renew_if_due(self.client, self.data_dir, self.identity, now=self.now(), before=before)
        except HubUnreachableError:
            raise
        except (AgentError, OSError) as exc:  # refused, or the identity file could not be written
            log.error("certificate renewal failed (tried again next cycle): %s", exc)
            return
        if renewed is not self.identity:
            log.info(
                "device certificate renewed; valid until %s",
                renewed.identity and renewed.identity.certificate_not_after,
            )
            self.identity = renewed

    def deliver(self) -> None:
        """Send buffered events, oldest first, then the kept state report.

        Raises:
            HubUnreachableError: the hub could not be reached; what is buffered stays.
        """
        while True:
            pending = self.outbox.pending()
            if not pending.events and not pending.dropped:
                break
            events = [{**body, "seq": seq} for seq, body in pending.events]
            try:
                through = self.client.events(self.identity, events, dropped=pending.dropped)
            except HubRefusedError as exc:
                if exc.status not in REFUSED_FOR_GOOD or not events:
                    log.warning("hub refused the events for now (%s); keeping them", exc)
                    return  # not the events' fault (credentials, enrollment): kept for a later cycle
                log.error("hub refused %d events (%s); dropping them", len(events), exc)
                self.outbox.discard(events[-1]["seq"])  # reported as dropped with the next batch
                continue
            self.outbox.acknowledge(through, dropped=pending.dropped)
            if not events or through < events[-1]["seq"]:
                break
        kept = self.outbox.report()
        if kept is not None:
            try:
                self.client.report(self.identity, kept)
                self.reported = (kept, self.clock())
            except HubRefusedError as exc:
                if exc.status not in REFUSED_FOR_GOOD:
                    log.warning("hub refused the state report for now (%s); keeping it", exc)
                    return
                log.error("hub refused the state report (%s); dropping it", exc)  # a newer one follows
            self.outbox.delivered_report(kept)

    def report(self) -> None:
        """State the device's twin: running releases, services, agent, host, last error (kept until delivered).

        Not when the hub already took the same (`agent.report.report_due`): an agent at rest sends
        only its poll, and writes nothing.
        """
        try:
            services_by_app = self.engine.status()
        except EngineError as exc:  # the engine is away: report what is known, and say so
            services_by_app = {}
            self.last_error = self.last_error or f"{ENGINE_ERROR}{exc.message}"[:500]
        stated: dict[str, Any] = {
            "apps": app_reports(self.state.apps, services_by_app),
            "agent_version": __version__,
            "os": f"{platform.system()} {platform.release()}"[:64],
            "arch": self.arch,
            "disk_free": shutil.disk_usage(self.data_dir).free,
            "mem_available": _mem_available(),
            "last_error": None if self.last_error is None else printable(self.last_error, MAX_REASON_CHARS),
        }
        if self.root_trust is not None:
            stated["repository_root"] = self.root_trust
        with contextlib.suppress(EngineError, ValidationError):  # away, or odd: the twin keeps what it said
            stated["engine"] = EngineReport.model_validate(self.engine.identify().as_report())
        try:
            properties = ReportedState.model_validate(stated).patch()
        except ValidationError as exc:  # a bug, not the device's state: the twin keeps what it said
            log.error("state report not sent: %s", exc)
            return
        last, last_at = self.reported or (None, None)
        # Compared as JSON, as the outbox keeps it and the hub took it. An older report still waiting is
        # replaced even when this one is due to no one: it must not go out instead.
        due = report_due(properties, last, last_at=last_at, now=self.clock(), bounds=self.bounds)
        if due or self.outbox.report() is not None:
            self.outbox.keep_report(properties)
        try:
            self.deliver()
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

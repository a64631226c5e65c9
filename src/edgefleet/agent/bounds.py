"""Every limit and timing the agent keeps, in one settings object: what it ships with, and what a config may change.

The agent's settings (`agent.config.AgentSettings`) hold one `Bounds` as their ``[bounds]``
table; each module of the agent reads its bounds from the instance it is given, or from
`DEFAULT_BOUNDS` where it runs before the settings are read. Limits the wire fixes are not
here but in `edgefleet.protocol` (a log tail longer than the hub takes helps no one), nor
are the container confinement's (`agent.spec`: they are part of each container's definition,
so changing one would recreate every container), nor the lifetime of a device token (each
hub says how long it takes, `agent.identity.TOKEN_LIFETIME` is within it), nor how downloads are
shown (`agent.progress`)::

    [bounds]
    phase_timeout = 3600        # a slow board on a slow link
    outbox_events = 5000        # a device that is offline for weeks
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.protocol import MAX_EVENTS_BODY_BYTES, MAX_LOGS_CHARS

KiB = 1024
MiB = 1024 * KiB
EVENT_ENVELOPE = 64
"""What a batch adds to each event on the wire (its sequence number, the separators)."""


class Bounds(BaseModel):
    """The agent's limits (bytes, counts) and timings (seconds); each has its own range."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # --- the hub ------------------------------------------------------------------------
    response_bytes: int = Field(default=1 * MiB, ge=64 * KiB, le=64 * MiB)
    """Largest answer the agent takes from the hub's device API (metadata files have their own TUF bounds)."""
    renew_before: float = Field(default=30 * 86400.0, ge=3600, le=180 * 86400)
    """Seconds before its certificate expires that the device asks for a new one."""
    update_retry_first: float = Field(default=30.0, ge=1, le=86400)
    update_retry_max: float = Field(default=1800.0, ge=1, le=7 * 86400)
    """Seconds before an update that could not be carried out (disk, engine) is tried again, doubling per try."""
    max_interruptions: int = Field(default=2, ge=1, le=100)
    """Updates of one assignment cut short in a row (agent or device gone) before it counts as failed."""
    report_refresh: float = Field(default=600.0, ge=10, le=86400)
    """Seconds after which an unchanged state report is sent again (`agent.report`)."""
    report_disk_share: float = Field(default=0.05, ge=0, le=1)
    report_memory_share: float = Field(default=0.10, ge=0, le=1)
    """How far free disk and memory must move, as a share of what was reported, to count as a change."""

    # --- downloads and verification -----------------------------------------------------
    download_resumes: int = Field(default=3, ge=0, le=100)
    """Times one file's download is resumed after its connection broke."""
    kept_partials: int = Field(default=8, ge=0, le=1000)
    """Partial downloads kept for resuming; the oldest go first."""
    refused_body_bytes: int = Field(default=64 * KiB, ge=1 * KiB, le=1 * MiB)
    """A refused download's body is read up to this much, so its connection can carry the next request."""
    root_bytes: int = Field(default=512 * KiB, ge=64 * KiB, le=16 * MiB)
    timestamp_bytes: int = Field(default=16 * KiB, ge=4 * KiB, le=1 * MiB)
    snapshot_bytes: int = Field(default=64 * KiB, ge=16 * KiB, le=64 * MiB)
    targets_bytes: int = Field(default=5 * MiB, ge=64 * KiB, le=256 * MiB)
    """Largest metadata file of each role the agent downloads (TUF's endless-data protection)."""
    root_rotations: int = Field(default=64, ge=1, le=10_000)
    """New root versions taken in one refresh."""
    root_versions: int = Field(default=64, ge=1, le=10_000)
    """Root versions the agent looks through, at first start, for the one its digest pins."""
    delegations: int = Field(default=32, ge=1, le=1000)
    """Delegated targets roles one search of the image repository visits (python-tuf's default)."""

    # --- the update transaction ---------------------------------------------------------
    phase_timeout: float = Field(default=1800.0, ge=60, le=86400)
    """Seconds each journaled phase may take before the update rolls back."""
    probe_margin: float = Field(default=300.0, ge=0, le=3600)
    """The probing phase's deadline is the health window plus this (checks may be slow to answer)."""
    probe_interval: float = Field(default=1.0, ge=0.1, le=60)
    """Seconds between two looks at the new release's health."""
    probe_answer_bytes: int = Field(default=64 * KiB, ge=1 * KiB, le=16 * MiB)
    """What an HTTP probe reads of its answer."""
    disk_reserve: int = Field(default=256 * MiB, ge=0, le=1024**4)
    """Bytes of the engine's storage an update must leave free beyond the new images (journal, logs, rolling back)."""

    # --- the journal and the outbox -----------------------------------------------------
    journal_error_chars: int = Field(default=2000, ge=100, le=100_000)
    """Characters of a transaction's error kept in the journal."""
    journal_detail_bytes: int = Field(default=64 * KiB, ge=16 * KiB, le=16 * MiB)
    """A transaction's detail in the journal: containers old and new, what settles it, a failing service's logs."""
    journal_keep: int = Field(default=200, ge=2, le=100_000)
    """Finished transactions kept in the journal (unfinished ones are never dropped); more than `max_interruptions`."""
    outbox_events: int = Field(default=1000, ge=1, le=1_000_000)
    """Events kept on disk while the hub is away; beyond it the oldest go and are counted as dropped."""
    event_bytes: int = Field(default=16 * KiB, ge=4 * KiB, le=1 * MiB)
    """Largest event the outbox keeps (its logs and reason are cut to fit)."""
    event_batch: int = Field(default=100, ge=1, le=100)
    """Events sent in one request (the hub takes at most 100)."""

    # --- the container engine -----------------------------------------------------------
    engine_answer_bytes: int = Field(default=16 * MiB, ge=1 * MiB, le=1024 * MiB)
    """Largest answer the agent reads from the engine (a listing of many containers)."""
    engine_message_bytes: int = Field(default=1 * MiB, ge=64 * KiB, le=64 * MiB)
    """Largest progress message of a streamed pull or load."""
    engine_silence: float = Field(default=1800.0, ge=60, le=86400)
    """Seconds a pull or load may go without a progress message before it counts as stuck."""
    stop_timeout: int = Field(default=10, ge=1, le=600)
    """Seconds a container gets to stop before it is killed."""
    remove_attempts: int = Field(default=5, ge=1, le=100)
    """Tries to remove a container (Podman refuses while one is between restarts)."""
    log_tail_lines: int = Field(default=40, ge=1, le=10_000)
    log_tail_bytes: int = Field(default=4 * KiB, ge=256, le=MAX_LOGS_CHARS)
    """What is kept of a failing service's logs (characters; the hub takes at most 8192)."""

    # --- local files --------------------------------------------------------------------
    policy_bytes: int = Field(default=64 * KiB, ge=1 * KiB, le=16 * MiB)
    policy_entries: int = Field(default=256, ge=1, le=100_000)
    """The device policy file's size, and the permissions in each of its lists."""

    @model_validator(mode="after")
    def _consistent(self) -> Bounds:
        if self.journal_keep <= self.max_interruptions:
            raise ValueError("journal_keep must be more than max_interruptions (the journal counts them)")
        if self.update_retry_max < self.update_retry_first:
            raise ValueError("update_retry_max must be at least update_retry_first")
        if self.event_batch * (self.event_bytes + EVENT_ENVELOPE) > MAX_EVENTS_BODY_BYTES:
            raise ValueError(
                f"event_batch x event_bytes must stay within the {MAX_EVENTS_BODY_BYTES} bytes a hub takes in one batch"
            )
        return self


DEFAULT_BOUNDS = Bounds()

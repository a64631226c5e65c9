"""Hub settings: one pydantic-settings object built at start-up and passed to every part.

Every bound the hub enforces (request bodies, list sizes, lifetimes, long-polls) lives here.
Values come from keyword arguments, then `EDGEFLEET_*` environment variables, then defaults.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgefleet.protocol import MAX_EVENTS_BODY_BYTES


class HubSettings(BaseSettings):
    """Configuration of one hub process."""

    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_", extra="ignore", frozen=True)

    data_dir: Path
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite inside data_dir when unset.")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    long_poll_max_seconds: float = Field(default=60.0, gt=0, le=900)
    list_max_items: int = Field(default=1000, ge=1, le=100_000)
    device_cert_lifetime: timedelta = timedelta(days=90)
    device_token_max_lifetime: timedelta = timedelta(minutes=10)
    clock_leeway: timedelta = timedelta(seconds=60)
    enrollment_token_max_ttl: timedelta = timedelta(days=365)
    enrollment_token_max_uses: int = Field(default=100_000, ge=1)
    api_token_max_ttl: timedelta = timedelta(days=3650)
    max_targets_bytes: int = Field(
        default=4 * 1024 * 1024, ge=64 * 1024, le=5 * 1024 * 1024, description="Largest targets metadata accepted."
    )
    max_artifact_bytes: int = Field(default=2 * 1024**3, ge=1024 * 1024, le=64 * 1024**3)
    max_events_bytes: int = Field(
        default=MAX_EVENTS_BODY_BYTES, ge=64 * 1024, le=16 * 1024 * 1024, description="Largest device events batch."
    )
    artifacts_dir: Path | None = Field(
        default=None, description="Where artifacts are kept; DATA_DIR/artifacts when unset."
    )
    timestamp_lifetime: timedelta = Field(default=timedelta(days=1), ge=timedelta(minutes=5))
    snapshot_lifetime: timedelta = Field(default=timedelta(days=7), ge=timedelta(minutes=5))
    director_lifetime: timedelta = Field(default=timedelta(days=7), ge=timedelta(minutes=5))
    public_repository: bool = Field(
        default=False, description="Serve the image repository (metadata and artifacts) without credentials."
    )
    max_concurrent_requests: int = Field(
        default=20_000,
        ge=10,
        le=1_000_000,
        description="Requests one process serves at once (held long-polls count); more are answered 503.",
    )
    rollout_interval_seconds: float = Field(
        default=2.0, gt=0, le=300, description="How often the rollout scheduler looks at deployments."
    )
    offline_after: timedelta = Field(
        default=timedelta(minutes=3),
        ge=timedelta(seconds=60),  # devices' last_seen is written at most every 30 s
        description="A device not heard from for this long counts as offline in rollouts.",
    )
    device_cache_seconds: float = Field(
        # Each expiry is a miss: an entry must outlive many of a device's cycles (a minute or so),
        # and with N processes a device's connections may land on any of them.
        default=600.0,
        ge=0,
        le=3600,
        description="How long a process keeps a device's record and target answer between changes (0: not at all).",
    )
    device_cache_entries: int = Field(
        default=100_000, ge=1, le=10_000_000, description="Devices whose record and answer one process keeps."
    )
    last_seen_flush_seconds: float = Field(
        default=5.0,
        gt=0,
        le=30,
        description="How often a process writes the devices it heard from.",
    )
    fetch_flush_seconds: float = Field(
        default=0.5,
        gt=0,
        le=30,
        description="How often a process writes the devices that fetched new targets, if any (paced rollouts wait).",
    )
    refusal_audits_per_minute: int = Field(
        default=120, ge=1, le=100_000, description="Refused unauthenticated requests audited per minute and process."
    )
    web_session_idle: timedelta = Field(
        default=timedelta(minutes=30),
        ge=timedelta(minutes=1),
        le=timedelta(days=1),
        description="A dashboard session ends after this long without a request.",
    )
    web_session_absolute: timedelta = Field(
        default=timedelta(hours=12),
        ge=timedelta(minutes=1),
        le=timedelta(days=30),
        description="A dashboard session ends this long after login, however active.",
    )
    web_sessions_per_token: int = Field(
        default=20, ge=1, le=1000, description="Dashboard sessions one API token may hold; logging in ends the oldest."
    )
    web_max_form_bytes: int = Field(
        default=8 * 1024, ge=1024, le=64 * 1024, description="Largest form body the dashboard reads."
    )
    web_page_size: int = Field(default=50, ge=1, le=1000, description="Rows per page of the dashboard's lists.")
    web_max_scan_devices: int = Field(
        default=100_000,
        ge=1,
        le=1_000_000,
        description="Devices the dashboard's overview and device list read at most (the rest are not counted).",
    )
    web_max_streams: int = Field(
        default=20, ge=1, le=10_000, description="Live (server-sent events) streams one hub process keeps open."
    )
    web_stream_max_seconds: float = Field(
        default=300.0, gt=0, le=3600, description="A live stream closes after this long; the browser reconnects."
    )
    web_stream_interval_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How often a live stream looks for changes."
    )
    web_origin: str | None = Field(
        default=None,
        pattern=r"^https?://[^/\s]+$",
        description="The dashboard's public origin (https://host:port) behind a proxy; else the request's own.",
    )

    def artifacts_path(self) -> Path:
        """Directory of the content-addressed artifact files."""
        return self.artifacts_dir or self.data_dir / "artifacts"

    def sqlalchemy_url(self) -> str:
        """The database URL to use: the configured one, or SQLite in the data dir."""
        if self.database_url:
            url = self.database_url
            # psycopg 3 is the driver we ship; accept the plain scheme operators write.
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{self.data_dir / 'hub.db'}"

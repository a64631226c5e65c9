"""The collector's pauses in the hub's /metrics: each collection timed, moved into the histogram by the app's task."""

from __future__ import annotations

import asyncio
import gc

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edgefleet.hub.api.gcpauses import PauseMetrics, export_pauses
from tests.conftest import Fleet, auth


def counted(text: str, generation: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "edgefleet_gc_pause_seconds_count" and sample.labels["generation"] == generation
    )


def test_a_full_collection_shows_in_the_hubs_metrics(fleet: Fleet) -> None:
    metrics: PauseMetrics = fleet.api.app.state.gc_pauses  # type: ignore[attr-defined]
    metrics.move()
    before = counted(fleet.api.get("/metrics", headers=auth(fleet.admin)).text, "2")
    gc.collect()
    assert metrics.move() >= 1
    after = counted(fleet.api.get("/metrics", headers=auth(fleet.admin)).text, "2")
    assert after >= before + 1  # (and any the process made by itself meanwhile)


def test_the_task_moves_the_pauses_until_cancelled() -> None:
    registry = CollectorRegistry()
    metrics = PauseMetrics(registry)
    metrics.move()

    async def run() -> None:
        task = asyncio.create_task(export_pauses(metrics, every=0.01))
        gc.collect()
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    moved = registry.get_sample_value("edgefleet_gc_pause_seconds_count", {"generation": "2"})
    assert moved is not None
    assert moved >= 1  # by the task, not by this test
    cpu = registry.get_sample_value("edgefleet_gc_pause_cpu_seconds_total", {"generation": "2"})
    assert cpu is not None
    assert cpu > 0
    assert metrics.pauses.take() == []


def test_pauses_dropped_unread_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = PauseMetrics(registry)
    before = metrics.pauses.dropped
    metrics.pauses.dropped += 3  # as the hook counts a collection the full deque could not keep
    metrics.move()
    assert registry.get_sample_value("edgefleet_gc_pauses_dropped_total") == 3
    metrics.pauses.dropped = before

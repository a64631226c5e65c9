"""Liveness and metrics: `/healthz` and Prometheus `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from edgefleet.hub.api.deps import HubDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import Health

router = APIRouter(tags=["system"], responses={503: ERRORS[503]})


@router.get("/healthz", response_model=Health)
def healthz(hub: HubDep) -> Health:
    """Ready when the database answers."""
    with hub.store.transaction(readonly=True) as tx:
        tx.ping()
    return Health(status="ok", database=hub.store.dialect)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics of the hub: of this process, or of all its worker processes added up."""
    registry = request.app.state.metrics
    if request.app.state.metrics_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(request.app.state.metrics_dir))  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

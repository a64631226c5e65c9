"""Operator routes for deployments: create, preview, apply, list, status, pause, resume, abort."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from edgefleet.hub.api.deps import HubDep, LimitDep, OperatorDep
from edgefleet.hub.api.routes import ERRORS
from edgefleet.hub.api.schemas import (
    AbortIn,
    ApplyIn,
    ApplyOut,
    ApplyResult,
    DeploymentIn,
    DeploymentList,
    DeploymentOut,
    DeploymentStatusOut,
    PreviewDevice,
    PreviewOut,
    WaveOut,
)
from edgefleet.hub.records import Deployment
from edgefleet.hub.services import deployments
from edgefleet.protocol import MAX_STATUS_AGE_SECONDS, AppName

router = APIRouter(prefix="/deployments", tags=["deployments"], responses=ERRORS)
DeploymentKey = Annotated[str, Path(min_length=1, max_length=63, description="Deployment id or name")]


def _spec(body: DeploymentIn) -> deployments.Spec:
    return deployments.make_spec(**body.model_dump())


def _out(deployment: Deployment) -> DeploymentOut:
    out = DeploymentOut.model_validate(deployment)
    return out.model_copy(update={"wave": deployment.wave + 1})


@router.post("", response_model=DeploymentOut, status_code=201)
def create(hub: HubDep, operator: OperatorDep, body: DeploymentIn) -> DeploymentOut:
    """Create a deployment; its first wave is assigned before this returns."""
    return _out(deployments.create(hub, operator, _spec(body)))


@router.post("/preview", response_model=PreviewOut)
def preview(hub: HubDep, operator: OperatorDep, body: DeploymentIn, limit: LimitDep) -> PreviewOut:
    """The devices a deployment would reach, in canary order with their wave, without creating it."""
    spec = _spec(body)
    found = deployments.preview(hub, operator, spec, limit=limit)
    return PreviewOut(
        name=spec.name,
        total=found.total,
        reach=found.reach,
        devices=[PreviewDevice(device_id=d, wave=w + 1) for d, w in found.targeted],
        kept_by=found.kept,
        incompatible=found.incompatible,
    )


@router.post("/apply", response_model=ApplyOut)
def apply(hub: HubDep, operator: OperatorDep, body: ApplyIn) -> ApplyOut:
    """Create or update the declared deployments (by name), all or none; applying the same twice changes nothing."""
    results = deployments.apply(hub, operator, [_spec(d) for d in body.deployments])
    return ApplyOut(results=[ApplyResult(name=name, outcome=outcome) for name, outcome in results])


@router.get("", response_model=DeploymentList)
def list_deployments(
    hub: HubDep, operator: OperatorDep, limit: LimitDep, app: Annotated[AppName | None, Query()] = None
) -> DeploymentList:
    """Deployments, oldest first."""
    return DeploymentList(items=[_out(d) for d in deployments.list_deployments(hub, operator, app=app, limit=limit)])


MaxAge = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_STATUS_AGE_SECONDS,
        description="A live view's refresh: a status computed for any viewer at most this many seconds ago"
        " (and 1 s at most) will do; 0 (the default): as of now",
    ),
]


@router.get("/{key}", response_model=DeploymentStatusOut)
def status(hub: HubDep, operator: OperatorDep, key: DeploymentKey, max_age: MaxAge = 0.0) -> DeploymentStatusOut:
    """The deployment and, per wave, its devices pending, downloading, updated, failed and offline."""
    found = deployments.status(hub, operator, key, max_age=max_age)
    waves = [
        WaveOut(wave=i + 1, reach=reach, **{name: getattr(c, name) for name in c.__slots__})
        for i, (reach, c) in enumerate(found.waves)
    ]
    return DeploymentStatusOut(deployment=_out(found.deployment), targeted=found.targeted, left=found.left, waves=waves)


@router.post("/{key}/pause", response_model=DeploymentOut)
def pause(hub: HubDep, operator: OperatorDep, key: DeploymentKey) -> DeploymentOut:
    """Hold an active deployment: nothing more is assigned until it resumes."""
    return _out(deployments.pause(hub, operator, key))


@router.post("/{key}/resume", response_model=DeploymentOut)
def resume(hub: HubDep, operator: OperatorDep, key: DeploymentKey) -> DeploymentOut:
    """Continue a paused deployment; the current wave's failures so far are accepted."""
    return _out(deployments.resume(hub, operator, key))


@router.post("/{key}/abort", response_model=DeploymentOut)
def abort(hub: HubDep, operator: OperatorDep, key: DeploymentKey, body: AbortIn) -> DeploymentOut:
    """Stop a deployment for good; with `rollback`, its devices get their previous release again."""
    return _out(deployments.abort(hub, operator, key, roll_back=body.rollback))

"""GET /health, /models and /text-to-image/aspect-ratios: no authentication."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Optional, TypeVar

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.engine import Engine

from models.aspect import ASPECT_RATIOS
from models.kinds import ModelKind, TaskType
from models.profiles import Profile, get_profile
from serving.placement import registry_location
from serving.state import ServiceState, StateDep

T = TypeVar("T")

router = APIRouter(tags=["service"])
# /health answers within this even when the registry (or the database under it) does not.
HEALTH_PING_TIMEOUT_S = 2.0


async def _one_at_a_time(pending: dict[int, asyncio.Future[T]], call: Callable[[], T]) -> T:
    """``call()`` on a thread, at most one per event loop (a future belongs to its loop): a later caller
    joins the one still waiting, so a read that hangs is never doubled (a thread cannot be stopped).
    Raises ``asyncio.TimeoutError`` after ``HEALTH_PING_TIMEOUT_S``, leaving the call running."""
    key = id(asyncio.get_running_loop())
    running = pending.get(key)
    if running is None or running.done():
        running = pending[key] = asyncio.ensure_future(asyncio.to_thread(call))
    return await asyncio.wait_for(asyncio.shield(running), HEALTH_PING_TIMEOUT_S)


def _select_one(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def _database_state(state: ServiceState) -> str:
    """``up`` when the database answers within ``HEALTH_PING_TIMEOUT_S``, else ``unreachable`` (a
    PostgreSQL connection attempt gives up after its connect timeout, and the next probe starts).
    One probe at a time per loop: a later /health joins the one still waiting."""
    try:
        await _one_at_a_time(state.database_probes, lambda: _select_one(state.engine))
    except Exception:  # timed out, or refused
        return "unreachable"
    return "up"


def _model_state(state, snapshot: dict, kind: ModelKind) -> str:
    """``loaded``, ``loading`` (deployment starting), ``not_loaded`` (failed or absent) or ``disabled``."""
    if kind.value not in state.settings.enabled_models:
        return "disabled"
    dep = snapshot["deployments"].get(state.settings.deployment_for(kind))
    if dep is None:
        return "not_loaded"
    if dep["running_replicas"] > 0:
        return "loaded"
    return "loading" if dep["status"] in ("UPDATING", "UPSCALING", "DEPLOYING") else "not_loaded"


def _memory_settings(state, dtype: str) -> dict:
    """How the models are laid out and held, as configured (the replicas' reports say it as loaded)."""
    settings = state.settings
    return {
        "layout": settings.model_layout,
        "dtype": dtype,
        "quantization": settings.quantization,
        "offload": settings.offload_mode,
    }


async def _replica_reports(state) -> dict[str, dict]:
    try:
        return await asyncio.wait_for(state.registry.replica_info(), HEALTH_PING_TIMEOUT_S)
    except Exception:  # the registry restarts or does not answer: the reports come back with it
        return {}


def _replicas_of(reports: dict[str, dict], kind: ModelKind) -> list[dict]:
    return [
        {
            "replica": replica_id,
            "deployment": report.get("deployment"),
            "device": report.get("device"),
            "device_memory": report.get("device_memory"),
            **report.get("models", {}).get(kind.value, {}),
        }
        for replica_id, report in sorted(reports.items())
        if kind.value in report.get("models", {})
    ]


async def _registry_location(state) -> Optional[dict]:
    """Where the registry runs (node, GPUs there, control-plane node or not), or None when unknown."""
    handle = getattr(state.registry, "handle", None)
    if handle is None:  # a registry that is no Ray actor
        return None
    # One lookup at a time per loop: with the GCS down a later /health joins the one still waiting
    # instead of leaving one more thread stuck in the default executor.
    resource = state.settings.registry_resource
    try:
        return await _one_at_a_time(state.registry_lookups, lambda: registry_location(handle, resource))
    except Exception:  # the GCS does not answer in time: the rest of /health still does
        return None


def _deployment_replicas(snapshot: dict) -> dict[str, dict]:
    """Per deployment: replicas running, starting, and waiting for resources (GPUs) Ray cannot find."""
    return {
        name: {
            "running": d["running_replicas"],
            "starting": d.get("starting_replicas", 0),
            "waiting_for_resources": d.get("waiting_for_resources", 0),
        }
        for name, d in snapshot["deployments"].items()
    }


@router.get("/health")
async def health(state: StateDep) -> dict:
    """Service state: ``healthy`` when every enabled model has a running replica and the registry answers."""
    snapshot = await state.deployment_status(stale_ok=False)
    models = {kind.value: _model_state(state, snapshot, kind) for kind in ModelKind}
    reports, database, registry_node = await asyncio.gather(
        _replica_reports(state), _database_state(state), _registry_location(state)
    )
    dtype = get_profile(state.settings.model_profile).dtype
    try:
        await asyncio.wait_for(state.registry.ping(), HEALTH_PING_TIMEOUT_S)
        registry = "up"
    except asyncio.TimeoutError:
        registry = "unresponsive"
    except Exception:
        registry = "restarting"
    enabled = [models[k] for k in state.settings.enabled_models]
    if registry == "up" and database == "up" and all(m == "loaded" for m in enabled):
        overall = "healthy"
    elif any(m == "loading" for m in enabled):
        overall = "starting"
    else:
        overall = "degraded"
    return {
        "status": overall,
        # the contract's <kind>_model_loaded flags
        **{f"{kind}_model_loaded": model == "loaded" for kind, model in models.items()},
        "gpu_available": snapshot["gpu_count"] > 0,
        "gpu_count": snapshot["gpu_count"],
        "model_profile": state.settings.model_profile,
        "models": models,
        "replicas": {name: d["running_replicas"] for name, d in snapshot["deployments"].items()},
        "task_registry": registry,
        # where it runs: a node with the control-plane resource and no GPUs, by rule (serving.placement)
        "task_registry_node": registry_node,
        # replicas waiting for resources: the cluster is short of GPUs before users notice
        "deployments": _deployment_replicas(snapshot),
        "database": database,
        "model_layout": state.settings.model_layout,
        # per model: the configured layout, dtype, quantization and offload; then what each replica
        # holding it reported (device, GPU memory in use and total)
        "model_memory": {
            kind.value: {**_memory_settings(state, dtype), "replicas": _replicas_of(reports, kind)}
            for kind in ModelKind
            if kind.value in state.settings.enabled_models
        },
    }


# What the pair's derived pipelines add and Qwen-Image 2.1 has no input for (its routes refuse them)
REDRAW_TASK_TYPES = frozenset({TaskType.image_to_image})


def _extra_capabilities(profile: Profile, kind: ModelKind) -> list[str]:
    """Beyond the contract's capabilities: the pair's redraws and masks; 2.1's several references."""
    if not profile.unified:
        return list(kind.spec.extra_capabilities)
    return [f"edit with 1-{profile.max_references} reference images"] if kind.spec.takes_images else []


@router.get("/models")
async def list_models(state: StateDep) -> dict:
    """What each model is and whether it is loaded (the tiny profile says it is a stand-in)."""
    profile = get_profile(state.settings.model_profile)
    snapshot = await state.deployment_status()
    reports = await _replica_reports(state)
    out = {}
    for kind in ModelKind:
        info = profile.info(kind.value)
        out[kind.value] = {
            "name": info.name,
            "description": info.description,
            "capabilities": list(info.capabilities),
            "extra_capabilities": _extra_capabilities(profile, kind),
            "task_types": [t.value for t in kind.spec.task_types if not (profile.unified and t in REDRAW_TASK_TYPES)],
            "status": _model_state(state, snapshot, kind),
            "profile": profile.name,
            "license": info.license,
            **_memory_settings(state, profile.dtype),
            "replicas": _replicas_of(reports, kind),
        }
    return out


@router.get("/ping", include_in_schema=False)
async def ping() -> dict:
    """A no-op: the floor of a request through the proxy and the ingress (benchmarks use it). Async,
    so that it costs no hop to the thread pool: the floor is the least any route can cost."""
    return {"ok": True}


@router.get("/text-to-image/aspect-ratios")
def aspect_ratios() -> dict[str, list[int]]:
    return {ratio: [w, h] for ratio, (w, h) in ASPECT_RATIOS.items()}

"""The ``loras`` and ``speed`` options of the generation routes, checked against the catalogue.

``loras=name:scale,name2:scale`` (at most 3; a scale left out is the adapter's default) names
adapters of the catalogue (``GET /loras``); ``speed=fast`` runs the model's Lightning adapter with
its scheduler, ``FAST_STEPS`` steps and true CFG off. Both are recorded in the task's parameters
(history, PNG metadata); replicas receive where each adapter's weights are from the registry.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal, Optional

from fastapi import Form, HTTPException, status
from sqlmodel import Session

from i18n import messages
from models.adapters import AdapterError, parse_adapter_uses
from serving.profile_inputs import service_profile
from serving.protocol import AdapterChoice, GenerationParameters
from serving.state import ServiceState
from storage.adapters import adapters_named
from storage.tables import Adapter

Loras = Annotated[
    Optional[str],
    Form(
        max_length=1000,
        description=(
            "LoRA adapters from GET /loras: name:scale,name2:scale "
            "(at most 3, scales -2…2; no scale: the adapter's default)"
        ),
    ),
]
Speed = Annotated[
    Literal["standard", "fast"],
    Form(
        description=(
            "fast: the model's Lightning adapter, FAST_STEPS steps (default 4), true CFG off; "
            "steps and CFG given are ignored"
        )
    ),
]


Background = Annotated[
    Optional[Literal["opaque", "transparent"]],
    Form(description="transparent: an RGBA PNG with a transparent background (the qwen21 profile only)"),
]


def _fast_steps(state: ServiceState) -> int:
    from models.profiles import QWEN21_TURBO_STEPS, get_profile

    return QWEN21_TURBO_STEPS if get_profile(state.settings.model_profile).unified else state.settings.fast_steps


def check_background(state: ServiceState, background: Optional[str]) -> None:
    """400 naming the profile that can, when transparent output is asked of one that cannot."""
    from models.profiles import get_profile

    if background == "transparent" and not get_profile(state.settings.model_profile).transparent:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=(
                f"background=transparent needs the qwen21 profile (Qwen-Image 2.1, MODEL_PROFILE=qwen21; tiny21 to "
                f"try it); this service runs the {state.settings.model_profile} profile, whose model draws opaque ones"
            ),
        )


async def apply_adapter_options(
    state: ServiceState,
    parameters: GenerationParameters,
    loras: Optional[str],
    speed: str,
    background: Optional[str] = None,
) -> GenerationParameters:
    """The task's parameters with ``loras`` (checked against the catalogue), ``speed`` and
    ``background`` applied.

    400 with a ``detail`` for a malformed list, an unknown adapter or one of another model, or a
    transparent background on a profile that draws opaque images.
    """
    check_background(state, background)
    if background == "transparent":
        parameters = parameters.model_copy(update={"background": "transparent"})
    kind = parameters.kind
    chosen: Optional[list[AdapterChoice]] = None
    if loras and loras.strip():
        names = [part.split(":", 1)[0].strip() for part in loras.split(",") if part.strip()]
        rows = await asyncio.to_thread(_lookup, state, names)
        try:
            uses = parse_adapter_uses(
                loras, default_scale=lambda name: rows[name].default_scale if name in rows else 1.0
            )
        except AdapterError as error:
            raise bad_loras(adapter_reason(error)) from None
        profile = service_profile(state)
        for use in uses:
            row = rows.get(use.name)
            if row is None:
                raise bad_loras(messages.ADAPTER_UNKNOWN(name=use.name))
            if row.base != profile.adapter_base:
                raise bad_loras(
                    messages.ADAPTER_OTHER_BASE(
                        name=use.name, base=row.base, service_base=profile.adapter_base, profile=profile.name
                    )
                )
            # A unified profile's one pipeline serves both kinds: its adapters apply to either
            if row.model != kind.value and not profile.unified:
                raise bad_loras(messages.ADAPTER_OTHER_MODEL(name=use.name, model=row.model, kind=kind.value))
        check_replicas_can_hold(state, [rows[use.name] for use in uses])
        chosen = [AdapterChoice(name=use.name, scale=use.scale) for use in uses]
    if speed == "fast" and chosen and service_profile(state).unified:
        # Turbo is another transformer, swapped in for the run: the adapters load onto the base one
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"the {service_profile(state).name} profile's fast mode (Qwen-Image 2.1 Turbo) takes no LoRA "
            f"adapters: leave out loras or speed=fast",
        )
    if speed == "fast":
        return parameters.model_copy(
            update={
                "loras": chosen,
                "speed": "fast",
                # Qwen-Image 2.1's Turbo runs its checkpoint's own 8-step grid
                "num_inference_steps": _fast_steps(state),
                "true_cfg_scale": 1.0,
            }
        )
    return parameters.model_copy(update={"loras": chosen}) if chosen else parameters


def check_replicas_can_hold(state: ServiceState, rows: list[Adapter]) -> None:
    """400 when a replica could never hold these adapters at once: more of them than its adapter
    cache keeps (``ADAPTER_CACHE_SIZE``; the fast mode's adapter has a place of its own), or more MB
    of them than ``ADAPTER_CACHE_MB`` (sizes of hub adapters are unknown here and not counted)."""
    settings = state.settings
    if len(rows) > settings.adapter_cache_size:
        raise bad_loras(messages.ADAPTERS_OVER_CACHE_COUNT(count=len(rows), limit=settings.adapter_cache_size))
    total = sum(row.size_bytes or 0 for row in rows)
    if settings.adapter_cache_mb and total > settings.adapter_cache_mb * 1024 * 1024:
        raise bad_loras(
            messages.ADAPTERS_OVER_CACHE_MB(size_mb=f"{total / 2**20:.1f}", limit_mb=settings.adapter_cache_mb)
        )


def adapter_reason(error: AdapterError) -> messages.Message:
    """What an :class:`AdapterError` says, as the catalogue message its ``code`` names."""
    template = messages.CATALOGUE.get(error.code or "")
    if template is None or set(error.params) != template.fields:
        return messages.ADAPTER_INVALID
    return template(**error.params)


def bad_loras(reason: messages.Message) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, messages.PARAM_INVALID(field="loras", reason=reason))


def _lookup(state: ServiceState, names: list[str]) -> dict[str, Adapter]:
    with Session(state.engine) as session:
        return adapters_named(session, names)

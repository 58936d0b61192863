"""What the routes take when the service runs the unified Qwen-Image 2.1 profile (``qwen21``, ``tiny21``).

The ingress knows the profile from the settings (``MODEL_PROFILE``), so requests the model cannot
run are a 400 naming the profile here rather than a failed task in the replica:

- redraws (``strength``, ``/image-to-image``) and masks: ``QwenImage21Pipeline`` has neither input;
- more reference images than the profile's model takes. The contract's edit limit (1-2 images)
  stays for the pair's profile; on a unified profile ``/image-edit`` and ``/v1/images/edits``
  take up to ``Profile.max_references`` (``QWEN21_MAX_REFERENCES``).

A request that does not give steps or true CFG gets the model's own defaults (40 steps, no CFG)
instead of the contract's per-kind ones (``models.kinds``), which are the pair's.

Pure Python (no torch): the ingress imports it.
"""

from __future__ import annotations

import functools
from collections.abc import Container

from fastapi import HTTPException, status

from models.profiles import QWEN21_DEFAULT_STEPS, Profile, get_profile
from serving.protocol import GenerationParameters
from serving.state import ServiceState

CONTRACT_MAX_REFERENCES = 2  # the contract's /image-edit and /v1/images/edits limit
NO_CFG = 1.0


@functools.lru_cache(maxsize=8)
def _profile(name: str) -> Profile:
    return get_profile(name)


def service_profile(state: ServiceState) -> Profile:
    """The profile the service's replicas run (``MODEL_PROFILE``), as plain data."""
    return _profile(state.settings.model_profile)


def max_references(state: ServiceState) -> int:
    """Reference images one edit may take: the contract's 2, or the unified profile's model's."""
    profile = service_profile(state)
    return profile.max_references if profile.unified else CONTRACT_MAX_REFERENCES


def no_redraw_reason(state: ServiceState) -> str | None:
    """Why this service cannot redraw or mask (the unified profile), or None when it can."""
    profile = service_profile(state)
    if not profile.unified:
        return None
    return (
        f"the {profile.name} profile (Qwen-Image 2.1) has no image-to-image redraw (strength), masks or "
        f"outpainting: its pipeline takes neither a strength nor a mask. Send the image as a reference to an "
        f"edit (/image-edit, /v1/images/edits), or run the qwen profile"
    )


def refuse_redraw(state: ServiceState) -> None:
    """400 naming the profile when the service runs one that cannot redraw or mask."""
    reason = no_redraw_reason(state)
    if reason is not None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=reason)


def too_many_references(state: ServiceState, count: int) -> str | None:
    """Why ``count`` reference images are too many for a unified profile, or None (the pair's limit is
    the contract's own message, left to the route)."""
    profile = service_profile(state)
    if not profile.unified or count <= profile.max_references:
        return None
    return (
        f"the {profile.name} profile (Qwen-Image 2.1) takes 1-{profile.max_references} reference images "
        f"in one edit, got {count}"
    )


def model_defaults(state: ServiceState, parameters: GenerationParameters, sent: Container[str]) -> GenerationParameters:
    """``parameters`` with the unified model's own steps and CFG where the request gave none
    (``sent``: the names of the fields it gave); unchanged on other profiles."""
    if not service_profile(state).unified:
        return parameters
    update: dict[str, object] = {}
    if "num_inference_steps" not in sent:
        update["num_inference_steps"] = QWEN21_DEFAULT_STEPS
    if "true_cfg_scale" not in sent:
        update["true_cfg_scale"] = NO_CFG
    return parameters.model_copy(update=update) if update else parameters

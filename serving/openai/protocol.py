"""OpenAI Images API shapes: requests, sizes, quality, models and the error body.

Pure Python (no torch): the ingress imports it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Literal, Optional, Union

from fastapi import HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from models.aspect import MAX_SIDE, MIN_SIDE, SIDE_MULTIPLE, valid_side
from models.derived import DEFAULT_MASKED_STRENGTH
from models.kinds import ModelKind
from models.seeds import MAX_SEED
from serving.protocol import MAX_PROMPT, GenerationParameters

# The /v1 model ids (``qwen-image``, ``qwen-image-edit``) and the kinds they run, from the kind table
MODEL_KIND = {kind.spec.api_model: kind for kind in ModelKind}
# Every accepted name (the /v1 id or the Hugging Face id) → the kind
MODEL_ALIASES = {name: kind for kind in ModelKind for name in (kind.spec.api_model, kind.spec.qwen_model_id)}
# Each kind's /v1 route
ROUTES = {ModelKind.text_to_image: "/v1/images/generations", ModelKind.image_edit: "/v1/images/edits"}
MODEL_CREATED = 1767225600  # 2026-01-01, when these model versions were published

# Sizes: "auto", or WxH with both sides valid (models.aspect: multiples of 16 from 256 to 2048).
SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")
AUTO_TEXT_TO_IMAGE_SIZE = (1024, 1024)

# quality → denoising steps. "auto" is the native route's default (50 text-to-image, 40 edit);
# "standard"/"hd" are DALL·E 3's names for medium/high. ``num_inference_steps`` overrides them.
QUALITY_STEPS = {"low": 20, "medium": 30, "high": 50}
QUALITY_ALIASES = {"standard": "medium", "hd": "high"}

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class ImageRequest(BaseModel):
    """The parameters /v1/images/generations (JSON) and /v1/images/edits (form fields) share.

    Unknown fields (``style``, ``moderation``, ``input_fidelity``…) are ignored, as OpenAI-compatible
    servers do, so that clients written for other models keep working.
    """

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    model: Optional[str] = None
    n: int = Field(default=1, ge=1, le=4)
    size: str = "auto"
    quality: Literal["auto", "low", "medium", "high", "standard", "hd"] = "auto"
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: Optional[int] = Field(default=None, ge=0, le=100)
    background: Literal["auto", "opaque", "transparent"] = "auto"
    user: Optional[str] = Field(default=None, max_length=256)
    safety_identifier: Optional[str] = Field(default=None, max_length=256)
    stream: bool = False
    partial_images: int = Field(default=0, ge=0, le=3)
    # Extras, named as SGLang Diffusion and vLLM-Omni name them.
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT)
    num_inference_steps: Optional[int] = Field(default=None, ge=1, le=100)
    # Left out: the kind table's defaults (true CFG 4.0; guidance 1.0 on edits).
    true_cfg_scale: Optional[float] = Field(default=None, ge=1.0, le=10.0)
    guidance_scale: Optional[float] = Field(default=None, ge=1.0, le=10.0)
    seed: int = Field(default=-1, ge=-1, le=MAX_SEED)
    # The native routes' options: LoRA adapters from GET /loras ("name:scale,…", or a list of
    # "name:scale" strings or {"name", "scale"} objects), fast mode (also what quality=low means),
    # and signed webhooks.
    loras: Optional[Union[str, list[Union[str, dict[str, Any]]]]] = None
    speed: Optional[Literal["standard", "fast"]] = None
    webhook_url: Optional[str] = Field(default=None, max_length=2048)
    webhook_events: Optional[Union[str, list[str]]] = None

    def generation_parameters(
        self,
        kind: ModelKind,
        model: str,
        size: Optional[tuple[int, int]],
        input_sizes: list[tuple[int, int]],
        masked: bool = False,
    ) -> GenerationParameters:
        """The task's parameters (``ValidationError`` for a prompt the model refuses). ``size`` is
        the output size (None for an edit's "auto"); ``input_sizes`` the edit's inputs; ``masked``:
        the last input is a mask over the first (an inpainting edit, at full strength)."""
        edit = kind.spec.takes_images
        return GenerationParameters(
            kind=kind,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            num_inference_steps=steps_for(self, kind),
            true_cfg_scale=self.true_cfg_scale,
            guidance_scale=self.guidance_scale if edit else None,
            seed=self.seed,
            num_images=self.n,
            width=size[0] if size and not edit else None,
            height=size[1] if size and not edit else None,
            input_count=len(input_sizes) if edit else None,
            input_sizes=input_sizes if edit else None,
            output_size=size if edit else None,
            mask=True if masked else None,
            strength=DEFAULT_MASKED_STRENGTH if masked else None,
            background="transparent" if self.background == "transparent" else None,
            api="openai",
            model=model,
            size=self.size,
            quality=self.quality,
            output_format=self.output_format,
            response_format=self.response_format,
            end_user=self.safety_identifier or self.user,
        )


def lora_list_text(loras: Any) -> Optional[str]:
    """The ``loras`` extra as the native routes' ``name:scale,…`` text."""
    if loras is None or isinstance(loras, str):
        return loras
    parts = []
    for item in loras:
        if isinstance(item, dict):
            name, scale = item.get("name"), item.get("scale")
            if not isinstance(name, str) or not name:
                raise invalid("loras", "each adapter needs a name")
            parts.append(name if scale is None else f"{name}:{scale}")
        else:
            parts.append(str(item))
    return ",".join(parts)


def speed_for(request: ImageRequest) -> str:
    """``speed`` if given; otherwise ``quality=low`` is fast mode (the Lightning adapter)."""
    if request.speed is not None:
        return request.speed
    return "fast" if request.quality == "low" else "standard"


class OpenAIError(HTTPException):
    """An error answered in OpenAI's body; ``param`` names the request field at fault."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: Optional[str] = None,
        code: Optional[str] = None,
        error_type: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
    ):
        super().__init__(status_code, message, headers=headers)
        self.param, self.code, self.error_type = param, code, error_type


def invalid(param: str, message: str, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(status.HTTP_400_BAD_REQUEST, message, param=param, code=code)


def resolve_model(requested: Optional[str], route_kind: ModelKind, aliases: Collection[str] = ()) -> str:
    """The canonical model id for a request; 404 for an unknown model, 400 for the other route's.

    A name in ``aliases`` (OpenAI's ``gpt-image-1``, ``dall-e-3``…) is the route's own model, so that
    scripts written for OpenAI run unchanged."""
    route_kind = ModelKind(route_kind)
    if requested is None or requested == "" or requested in aliases:
        return route_kind.spec.api_model
    if requested not in MODEL_ALIASES:
        raise OpenAIError(
            status.HTTP_404_NOT_FOUND, f"The model '{requested}' does not exist", param="model", code="model_not_found"
        )
    kind = MODEL_ALIASES[requested]
    if kind != route_kind:
        raise invalid("model", f"The model '{requested}' is not supported on this route; use {ROUTES[kind]}")
    return kind.spec.api_model


def parse_size(size: str, kind: ModelKind) -> Optional[tuple[int, int]]:
    """(width, height), or None for an edit's "auto" (the pipeline's own size: the last input's
    aspect ratio at about one megapixel)."""
    kind = ModelKind(kind)
    if size == "auto":
        return None if kind.spec.takes_images else AUTO_TEXT_TO_IMAGE_SIZE
    match = SIZE_PATTERN.match(size)
    rule = (
        f"sizes are 'auto' or WxH with each side a multiple of {SIDE_MULTIPLE} "
        f"from {MIN_SIDE} to {MAX_SIDE}, e.g. 1024x1024, 1664x928, 1024x1536"
    )
    if not match:
        raise invalid("size", f"Invalid value: '{size}'. {rule[0].upper()}{rule[1:]}")
    width, height = int(match.group(1)), int(match.group(2))
    if not (valid_side(width) and valid_side(height)):
        raise invalid("size", f"Invalid value: '{size}'. {rule[0].upper()}{rule[1:]}")
    return width, height


def resolved_quality(quality: str) -> str:
    """What the response reports: one of low, medium, high."""
    quality = QUALITY_ALIASES.get(quality, quality)
    return "high" if quality == "auto" else quality


def steps_for(request: ImageRequest, kind: ModelKind) -> int:
    if request.num_inference_steps is not None:
        return request.num_inference_steps
    quality = QUALITY_ALIASES.get(request.quality, request.quality)
    return ModelKind(kind).spec.default_steps if quality == "auto" else QUALITY_STEPS[quality]


def check_common(request: ImageRequest, profile: Optional[str] = None) -> None:
    """Refusals that a field's type alone does not express. ``profile``: the service's model profile
    (``MODEL_PROFILE``); transparent output needs one whose model draws RGBA (Qwen-Image 2.1)."""
    if request.background == "transparent":
        from models.profiles import get_profile

        if profile is None or not get_profile(profile).transparent:
            raise invalid(
                "background",
                f"background 'transparent' needs the qwen21 profile (Qwen-Image 2.1, MODEL_PROFILE=qwen21; "
                f"tiny21 to try it); this service runs the {profile or 'default'} profile, whose model draws "
                f"opaque images",
            )
        if request.output_format == "jpeg":
            raise invalid("output_format", "background 'transparent' needs output_format png or webp")
    if not request.prompt.strip():
        raise invalid("prompt", "prompt must not be empty")

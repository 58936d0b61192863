"""POST /text-to-image, /image-edit and /image-edit/batch (contract § 2–4)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import Response
from starlette.datastructures import UploadFile as FormFile

from auth.deps import CurrentUser
from i18n import messages
from models.aspect import (
    ASPECT_RATIOS,
    DEFAULT_ASPECT_RATIO,
    MAX_SIDE,
    MIN_SIDE,
    SIDE_MULTIPLE,
    redraw_output_size,
    size_for_aspect_ratio,
    valid_side,
)
from models.derived import DEFAULT_MASKED_STRENGTH, DEFAULT_STRENGTH, MAX_EXTEND, extension_for_ratio
from models.kinds import ModelKind, TaskType
from models.seeds import MAX_SEED
from serving.adapter_options import Background, Loras, Speed, apply_adapter_options
from serving.profile_inputs import max_references, model_defaults, refuse_redraw, too_many_references
from serving.protocol import MAX_BATCH_PROMPTS, MAX_PROMPT, GenerationParameters
from serving.routes.common import ACCEPTED_RESPONSE, generation_parameters, submit
from serving.state import ServiceState, StateDep
from serving.uploads import ValidatedUpload, read_limited, validate_mask, validate_upload
from serving.webhook_sender import WEBHOOK_EVENTS, webhook_spec


async def refuse_unknown_fields(request: Request, user: CurrentUser) -> None:
    """A form field the route does not take is a 400 naming it and the ones it takes, as OpenAI's
    API does, never silently ignored (``width`` sent to a route without it would otherwise give
    an image of another size with a 200). Runs after authentication: strangers learn nothing."""
    route = request.scope.get("route")
    form = await request.form()  # the body FastAPI already parsed: cached on the request
    accepted = _accepted_fields(route)
    unknown = sorted({name for name in form if name not in accepted})
    if unknown:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            messages.UNKNOWN_FIELDS(fields=", ".join(unknown), accepted=", ".join(sorted(accepted))),
        )


_ACCEPTED: dict[int, frozenset[str]] = {}


def _accepted_fields(route: Any) -> frozenset[str]:
    """The form fields a route declares (its own and its dependencies'), computed once per route."""
    key = id(route)
    if key not in _ACCEPTED:
        _ACCEPTED[key] = frozenset(_body_fields(route.dependant))
    return _ACCEPTED[key]


def _body_fields(dependant: Any) -> set[str]:
    names = {param.alias for param in dependant.body_params}
    for sub in dependant.dependencies:
        names |= _body_fields(sub)
    return names


router = APIRouter(tags=["generation"], dependencies=[Depends(refuse_unknown_fields)])

TEXT_TO_IMAGE, IMAGE_EDIT = ModelKind.text_to_image.spec, ModelKind.image_edit.spec

# Lengths and NUL characters are checked by GenerationParameters, the same for every route.
Prompt = Annotated[str, Form(min_length=1, max_length=MAX_PROMPT, description="what to draw or change")]
NegativePrompt = Annotated[str, Form(max_length=MAX_PROMPT)]
TrueCfg = Annotated[float, Form(ge=1.0, le=10.0)]
Seed = Annotated[int, Form(ge=-1, le=MAX_SEED, description="-1 = random; the seed used is reported")]
NumImages = Annotated[int, Form(ge=1, le=4)]
AsyncMode = Annotated[bool, Form(description="false waits and answers with the image(s)")]
Steps = Annotated[int, Form(ge=20, le=100)]
WebhookUrl = Annotated[
    Optional[str], Form(max_length=2048, description="http(s) URL called (signed) as the task moves on")
]
WebhookEvents = Annotated[
    Optional[str],
    Form(max_length=200, description=f"comma-separated, of {', '.join(WEBHOOK_EVENTS)}; default the terminal ones"),
]

# [beyond] An output size in pixels instead of one of the seven ratios: both sides, or neither.
Width = Annotated[
    Optional[int],
    Form(
        description=f"output width in pixels, a multiple of {SIDE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}, with height"
    ),
]
Height = Annotated[
    Optional[int],
    Form(
        description=f"output height in pixels, a multiple of {SIDE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}, with width"
    ),
]

Strength = Annotated[
    Optional[float],
    Form(
        gt=0.0,
        le=1.0,
        description=f"how much of the image is redrawn: 0.1 keeps it nearly as it is, 1 repaints it; "
        f"default {DEFAULT_STRENGTH}, or {DEFAULT_MASKED_STRENGTH} with a mask or when outpainting",
    ),
]
MaskFile = Annotated[
    Optional[UploadFile],
    File(
        description="the region to repaint, the image's size: a PNG with transparency (transparent = repaint, "
        "OpenAI's rule) or an opaque black-and-white image (white = repaint, AUTOMATIC1111's rule)"
    ),
]
Extend = Annotated[int, Form(ge=0, le=MAX_EXTEND, description="outpainting: pixels added on this side")]
ExtendTo = Annotated[
    Optional[str], Form(max_length=9, description="outpainting: extend (centred) to this aspect ratio, e.g. 16:9")
]

RESULT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "PNG (one image) or ZIP (several)", "content": {"image/png": {}, "application/zip": {}}},
    202: ACCEPTED_RESPONSE,
}


async def _pixel_size(request: Request, width: Optional[int], height: Optional[int]) -> Optional[tuple[int, int]]:
    """``(width, height)`` when the request gives a size in pixels, None when it gives none (then
    ``aspect_ratio``, sent or defaulted, decides). Both sides or neither, and not with a ratio."""
    if width is None and height is None:
        return None
    if width is None or height is None or "aspect_ratio" in await request.form():
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.SIZE_OR_RATIO)
    for field, side in (("width", width), ("height", height)):
        if not valid_side(side):
            reason = messages.SIDE_INVALID(min_side=MIN_SIDE, max_side=MAX_SIDE, multiple=SIDE_MULTIPLE, value=side)
            raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.PARAM_INVALID(field=field, reason=reason))
    return width, height


async def _read_mask(state: ServiceState, mask: FormFile | str, image_size: tuple[int, int]) -> ValidatedUpload:
    if isinstance(mask, str):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, messages.PARAM_INVALID(field="mask", reason=messages.IMAGE_REQUIRED)
        )
    data = await read_limited(mask, state.settings.max_upload_bytes)
    return await asyncio.to_thread(
        validate_mask,
        data,
        mask.filename or "mask",
        image_size,
        state.settings.max_image_pixels,
        state.settings.max_decoded_mb * 2**20,
    )


def _ratio_size(aspect_ratio: str) -> tuple[int, int]:
    """The size of one of the contract's seven ratios; any other is a 400 listing them."""
    if aspect_ratio not in ASPECT_RATIOS:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            messages.ASPECT_RATIO_UNSUPPORTED(aspect_ratio=aspect_ratio, choices=", ".join(ASPECT_RATIOS)),
        )
    return size_for_aspect_ratio(aspect_ratio)


def _outpaint_sides(
    size: tuple[int, int], sides: tuple[int, int, int, int], extend_to: Optional[str], *, masked: bool, max_pixels: int
) -> Optional[tuple[int, int, int, int]]:
    """The pixels an outpainting adds (left, top, right, bottom), from the four sides or a ratio;
    None when the request extends nothing. The canvas may hold no more pixels than an upload
    (``MAX_IMAGE_PIXELS``): the replica builds it in memory."""
    if extend_to is not None:
        if any(sides):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.EXTEND_RATIO_OR_SIDES)
        sides = extension_for_ratio(*size, _ratio("extend_to", extend_to))
        if not any(sides):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.EXTEND_NOTHING(ratio=extend_to))
    if not any(sides):
        return None
    if masked:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.MASK_OR_OUTPAINT)
    width, height = size[0] + sides[0] + sides[2], size[1] + sides[1] + sides[3]
    if width * height > max_pixels:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            messages.OUTPAINT_TOO_LARGE(width=width, height=height, max_pixels=max_pixels),
        )
    return sides


def _ratio(field: str, value: str) -> tuple[int, int]:
    parts = value.split(":")
    if len(parts) == 2 and all(p.isascii() and p.isdigit() and 1 <= int(p) <= 100 for p in parts):
        return int(parts[0]), int(parts[1])
    raise HTTPException(
        status.HTTP_400_BAD_REQUEST, messages.PARAM_INVALID(field=field, reason=messages.RATIO_INVALID(value=value))
    )


def _clean_prompt(prompt: str, field: str = "prompt") -> str:
    prompt = prompt.strip()
    if not prompt:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.PARAM_EMPTY(field=field))
    return prompt


async def _read_images(state: ServiceState, uploads: Sequence[FormFile | str], max_count: int) -> list[ValidatedUpload]:
    """Each upload read within its limit and checked by decoding; the pixels are not kept. ``uploads``
    are form parts: a text part where an image belongs is no image."""
    if not uploads:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.IMAGE_REQUIRED)
    if len(uploads) > max_count:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.TOO_MANY_IMAGES(limit=max_count))
    images = []
    for n, upload in enumerate(uploads, start=1):
        if isinstance(upload, str):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.IMAGE_REQUIRED)
        data = await read_limited(upload, state.settings.max_upload_bytes)
        name = upload.filename or f"#{n}"
        images.append(
            await asyncio.to_thread(
                validate_upload, data, name, state.settings.max_image_pixels, state.settings.max_decoded_mb * 2**20
            )
        )
    return images


@router.post("/text-to-image", status_code=status.HTTP_202_ACCEPTED, responses=RESULT_RESPONSES)
async def text_to_image(
    request: Request,
    user: CurrentUser,
    state: StateDep,
    prompt: Prompt,
    negative_prompt: NegativePrompt = "",
    aspect_ratio: Annotated[str, Form(description="one of GET /text-to-image/aspect-ratios")] = DEFAULT_ASPECT_RATIO,
    num_inference_steps: Steps = TEXT_TO_IMAGE.default_steps,
    true_cfg_scale: TrueCfg = TEXT_TO_IMAGE.default_true_cfg_scale,
    seed: Seed = -1,
    num_images: NumImages = 1,
    async_mode: AsyncMode = True,
    webhook_url: WebhookUrl = None,
    webhook_events: WebhookEvents = None,
    loras: Loras = None,
    speed: Speed = "standard",
    background: Background = None,
    width: Width = None,
    height: Height = None,
) -> Response:
    """Generate 1–4 images from a prompt with Qwen-Image-2512."""
    webhook = await webhook_spec(
        webhook_url, webhook_events, allow_private=state.settings.webhook_allow_private_networks
    )
    prompt = _clean_prompt(prompt)
    size = await _pixel_size(request, width, height)
    ratio: Optional[str] = None if size is not None else aspect_ratio
    width, height = size or _ratio_size(aspect_ratio)
    parameters = generation_parameters(
        lambda: GenerationParameters(
            kind=ModelKind.text_to_image,
            prompt=prompt,
            negative_prompt=negative_prompt,
            aspect_ratio=ratio,
            width=width,
            height=height,
            num_inference_steps=num_inference_steps,
            true_cfg_scale=true_cfg_scale,
            seed=seed,
            num_images=num_images,
        )
    )
    parameters = model_defaults(state, parameters, await request.form())
    parameters = await apply_adapter_options(state, parameters, loras, speed, background)
    return await submit(
        state,
        user,
        task_type=TaskType.text_to_image.value,
        parameters=parameters,
        image_count=num_images,
        inputs=[],
        async_mode=async_mode,
        webhook=webhook,
    )


@router.post("/image-edit", status_code=status.HTTP_202_ACCEPTED, responses=RESULT_RESPONSES)
async def image_edit(
    request: Request,
    user: CurrentUser,
    state: StateDep,
    images: Annotated[
        list[UploadFile],
        File(description="1–2 images (JPEG, PNG, WebP; ≤ 20 MB each); 1–4 on the qwen21 profile"),
    ],
    prompt: Prompt,
    negative_prompt: NegativePrompt = "",
    num_inference_steps: Steps = IMAGE_EDIT.default_steps,
    true_cfg_scale: TrueCfg = IMAGE_EDIT.default_true_cfg_scale,
    guidance_scale: Annotated[float, Form(ge=1.0, le=10.0)] = IMAGE_EDIT.default_guidance_scale or 1.0,
    seed: Seed = -1,
    num_images: NumImages = 1,
    async_mode: AsyncMode = True,
    webhook_url: WebhookUrl = None,
    webhook_events: WebhookEvents = None,
    loras: Loras = None,
    speed: Speed = "standard",
    background: Background = None,
    mask: MaskFile = None,
    strength: Strength = None,
) -> Response:
    """Edit one image, or compose two, with Qwen-Image-Edit-2511; with a ``mask``, repaint only
    that region of one image."""
    webhook = await webhook_spec(
        webhook_url, webhook_events, allow_private=state.settings.webhook_allow_private_networks
    )
    prompt = _clean_prompt(prompt)
    if mask is not None or strength is not None:
        refuse_redraw(state)
    too_many = too_many_references(state, len(images))
    if too_many is not None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, too_many)
    inputs = await _read_images(state, images, max_references(state))
    if mask is None and strength is not None:
        reason = messages.STRENGTH_NEEDS_MASK
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.PARAM_INVALID(field="strength", reason=reason))
    if mask is not None:
        if len(inputs) != 1:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.MASK_ONE_IMAGE(count=len(inputs)))
        inputs.append(await _read_mask(state, mask, inputs[0].size))
        strength = strength or DEFAULT_MASKED_STRENGTH
    parameters = generation_parameters(
        lambda: GenerationParameters(
            kind=ModelKind.image_edit,
            prompt=prompt,
            negative_prompt=negative_prompt,
            num_inference_steps=num_inference_steps,
            true_cfg_scale=true_cfg_scale,
            guidance_scale=guidance_scale,
            seed=seed,
            num_images=num_images,
            input_count=1 if mask is not None else len(inputs),
            input_sizes=[image.size for image in inputs[:1]] if mask is not None else [i.size for i in inputs],
            strength=strength,
            mask=True if mask is not None else None,
        )
    )
    parameters = model_defaults(state, parameters, await request.form())
    parameters = await apply_adapter_options(state, parameters, loras, speed, background)
    return await submit(
        state,
        user,
        task_type=TaskType.image_edit.value,
        parameters=parameters,
        image_count=num_images,
        inputs=inputs,
        async_mode=async_mode,
        webhook=webhook,
    )


@router.post("/image-to-image", status_code=status.HTTP_202_ACCEPTED, responses=RESULT_RESPONSES)
async def image_to_image(
    request: Request,
    user: CurrentUser,
    state: StateDep,
    image: Annotated[UploadFile, File(description="the image to redraw (JPEG, PNG, WebP; ≤ 20 MB)")],
    prompt: Prompt,
    negative_prompt: NegativePrompt = "",
    strength: Strength = None,
    mask: MaskFile = None,
    extend_left: Extend = 0,
    extend_top: Extend = 0,
    extend_right: Extend = 0,
    extend_bottom: Extend = 0,
    extend_to: ExtendTo = None,
    aspect_ratio: Annotated[
        Optional[str], Form(description="output ratio, one of GET /text-to-image/aspect-ratios; default the input's")
    ] = None,
    width: Width = None,
    height: Height = None,
    num_inference_steps: Steps = TEXT_TO_IMAGE.default_steps,
    true_cfg_scale: TrueCfg = TEXT_TO_IMAGE.default_true_cfg_scale,
    seed: Seed = -1,
    num_images: NumImages = 1,
    async_mode: AsyncMode = True,
    webhook_url: WebhookUrl = None,
    webhook_events: WebhookEvents = None,
    loras: Loras = None,
    speed: Speed = "standard",
    background: Background = None,
) -> Response:
    """Redraw an image at a ``strength`` (image-to-image), repaint the region of a ``mask``
    (inpainting), or extend the canvas (``extend_*``: outpainting) with Qwen-Image-2512's weights.
    The output keeps the input's aspect ratio at about one megapixel unless a ratio or size is given."""
    refuse_redraw(state)  # the unified profile (Qwen-Image 2.1) has no redraw, mask or outpainting
    webhook = await webhook_spec(
        webhook_url, webhook_events, allow_private=state.settings.webhook_allow_private_networks
    )
    prompt = _clean_prompt(prompt)
    # FastAPI binds one of several same-named parts; this route takes exactly one image.
    inputs = await _read_images(state, (await request.form()).getlist("image"), 1)
    outpaint = _outpaint_sides(
        inputs[0].size,
        (extend_left, extend_top, extend_right, extend_bottom),
        extend_to,
        masked=mask is not None,
        max_pixels=state.settings.max_image_pixels,
    )
    if mask is not None:
        inputs.append(await _read_mask(state, mask, inputs[0].size))
    size = await _pixel_size(request, width, height)
    ratio: Optional[str] = None
    if size is None and aspect_ratio is not None:
        ratio, size = aspect_ratio, _ratio_size(aspect_ratio)
    if size is None:  # the input's (or the extended canvas's) ratio at about a megapixel
        source = inputs[0].size
        if outpaint is not None:
            source = (source[0] + outpaint[0] + outpaint[2], source[1] + outpaint[1] + outpaint[3])
        size = redraw_output_size(*source)
    width, height = size
    if strength is None:
        strength = DEFAULT_MASKED_STRENGTH if mask is not None or outpaint else DEFAULT_STRENGTH
    parameters = generation_parameters(
        lambda: GenerationParameters(
            kind=ModelKind.text_to_image,
            prompt=prompt,
            negative_prompt=negative_prompt,
            aspect_ratio=ratio,
            width=width,
            height=height,
            num_inference_steps=num_inference_steps,
            true_cfg_scale=true_cfg_scale,
            seed=seed,
            num_images=num_images,
            input_count=1,
            input_sizes=[inputs[0].size],
            strength=strength,
            mask=True if mask is not None else None,
            outpaint=outpaint,
        )
    )
    parameters = await apply_adapter_options(state, parameters, loras, speed, background)
    return await submit(
        state,
        user,
        task_type=TaskType.image_to_image.value,
        parameters=parameters,
        image_count=num_images,
        inputs=inputs,
        async_mode=async_mode,
        webhook=webhook,
    )


@router.post("/image-edit/batch", status_code=status.HTTP_202_ACCEPTED, responses=RESULT_RESPONSES)
async def image_edit_batch(
    request: Request,
    user: CurrentUser,
    state: StateDep,
    image: Annotated[UploadFile, File(description="one image (JPEG, PNG, WebP; ≤ 20 MB)")],
    prompts: Annotated[
        str,
        Form(
            min_length=1,
            max_length=MAX_PROMPT * MAX_BATCH_PROMPTS,
            description="edit prompts separated by |, at most 10",
        ),
    ],
    negative_prompt: NegativePrompt = "",
    num_inference_steps: Steps = IMAGE_EDIT.default_steps,
    true_cfg_scale: TrueCfg = IMAGE_EDIT.default_true_cfg_scale,
    seed: Seed = -1,
    async_mode: AsyncMode = True,
    webhook_url: WebhookUrl = None,
    webhook_events: WebhookEvents = None,
    loras: Loras = None,
    speed: Speed = "standard",
    background: Background = None,
) -> Response:
    """Apply several edit prompts to one image: one task, one result image per prompt."""
    webhook = await webhook_spec(
        webhook_url, webhook_events, allow_private=state.settings.webhook_allow_private_networks
    )
    prompt_list = [p.strip() for p in prompts.split("|") if p.strip()]
    if not prompt_list:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.PARAM_EMPTY(field="prompts"))
    if len(prompt_list) > MAX_BATCH_PROMPTS:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, messages.TOO_MANY_PROMPTS(limit=MAX_BATCH_PROMPTS, count=len(prompt_list))
        )
    if any(len(p) > MAX_PROMPT for p in prompt_list):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.PROMPT_TOO_LONG(limit=MAX_PROMPT))
    # FastAPI binds one of several same-named parts; the contract allows exactly one image.
    inputs = await _read_images(state, (await request.form()).getlist("image"), 1)
    parameters = generation_parameters(
        lambda: GenerationParameters(
            kind=ModelKind.image_edit,
            prompts=prompt_list,
            negative_prompt=negative_prompt,
            num_inference_steps=num_inference_steps,
            true_cfg_scale=true_cfg_scale,
            seed=seed,
            input_count=1,
            input_sizes=[inputs[0].size],
        )
    )
    parameters = model_defaults(state, parameters, await request.form())
    parameters = await apply_adapter_options(state, parameters, loras, speed, background)
    return await submit(
        state,
        user,
        task_type=TaskType.batch_edit.value,
        parameters=parameters,
        image_count=len(prompt_list),
        inputs=inputs,
        async_mode=async_mode,
        webhook=webhook,
    )

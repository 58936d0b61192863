"""POST /text-to-image, /image-edit and /image-edit/batch (contract § 2–4)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any, Optional

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import Response
from starlette.datastructures import UploadFile as FormFile

from auth.deps import CurrentUser
from i18n import messages
from models.aspect import ASPECT_RATIOS, DEFAULT_ASPECT_RATIO, size_for_aspect_ratio
from models.kinds import ModelKind, TaskType
from models.seeds import MAX_SEED
from serving.adapter_options import Loras, Speed, apply_adapter_options
from serving.protocol import MAX_BATCH_PROMPTS, MAX_PROMPT, GenerationParameters
from serving.routes.common import ACCEPTED_RESPONSE, generation_parameters, submit
from serving.state import ServiceState, StateDep
from serving.uploads import ValidatedUpload, read_limited, validate_upload
from serving.webhook_sender import WEBHOOK_EVENTS, webhook_spec

router = APIRouter(tags=["generation"])

MAX_EDIT_IMAGES = 2
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

RESULT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "PNG (one image) or ZIP (several)", "content": {"image/png": {}, "application/zip": {}}},
    202: ACCEPTED_RESPONSE,
}


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
) -> Response:
    """Generate 1–4 images from a prompt with Qwen-Image-2512."""
    webhook = await webhook_spec(
        webhook_url, webhook_events, allow_private=state.settings.webhook_allow_private_networks
    )
    prompt = _clean_prompt(prompt)
    if aspect_ratio not in ASPECT_RATIOS:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            messages.ASPECT_RATIO_UNSUPPORTED(aspect_ratio=aspect_ratio, choices=", ".join(ASPECT_RATIOS)),
        )
    width, height = size_for_aspect_ratio(aspect_ratio)
    parameters = generation_parameters(
        lambda: GenerationParameters(
            kind=ModelKind.text_to_image,
            prompt=prompt,
            negative_prompt=negative_prompt,
            aspect_ratio=aspect_ratio,
            width=width,
            height=height,
            num_inference_steps=num_inference_steps,
            true_cfg_scale=true_cfg_scale,
            seed=seed,
            num_images=num_images,
        )
    )
    parameters = await apply_adapter_options(state, parameters, loras, speed)
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
    user: CurrentUser,
    state: StateDep,
    images: Annotated[list[UploadFile], File(description="1–2 images (JPEG, PNG, WebP; ≤ 20 MB each)")],
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
) -> Response:
    """Edit one image, or compose two, with Qwen-Image-Edit-2511."""
    webhook = await webhook_spec(
        webhook_url, webhook_events, allow_private=state.settings.webhook_allow_private_networks
    )
    prompt = _clean_prompt(prompt)
    inputs = await _read_images(state, images, MAX_EDIT_IMAGES)
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
            input_count=len(inputs),
            input_sizes=[image.size for image in inputs],
        )
    )
    parameters = await apply_adapter_options(state, parameters, loras, speed)
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
    parameters = await apply_adapter_options(state, parameters, loras, speed)
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

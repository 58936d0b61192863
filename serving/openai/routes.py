"""/v1: OpenAI's Images API over the service's own tasks.

Each call is a task like any other (``text_to_image`` or ``image_edit``): it counts against the
quota per image, shows in history and statistics with ``"api": "openai"`` in its parameters, can
be cancelled while it waits (``DELETE /tasks/{id}``; the id is in the ``X-Task-Id`` header), and
runs on the same model deployments through the same registry.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Optional

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from auth.deps import CurrentUser
from auth.throttle import throttle_key
from models.kinds import ModelKind
from serving.adapter_options import apply_adapter_options
from serving.errors import error_body
from serving.openai import images
from serving.openai.protocol import (
    MEDIA_TYPES,
    MODEL_CREATED,
    MODEL_KIND,
    ImageRequest,
    OpenAIError,
    check_common,
    invalid,
    lora_list_text,
    parse_size,
    resolve_model,
    resolved_quality,
    speed_for,
)
from serving.profile_inputs import max_references, model_defaults, no_redraw_reason, too_many_references
from serving.protocol import PreviewImage, ResultLocation, TaskCompleted, TaskEvent, TaskFailed
from serving.routes.common import create_task, generation_parameters, read_result, result_headers
from serving.state import ServiceState, StateDep
from serving.uploads import read_limited, validate_mask, validate_upload
from serving.webhook_sender import webhook_spec
from storage import TaskStatus
from storage.tasks import get_task_record

router = APIRouter(prefix="/v1", tags=["openai"])

MAX_EDIT_IMAGES = 2
# While a stream waits for its task, a comment line this often keeps proxies from closing it.
KEEPALIVE_S = 15.0
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": 'OpenAI error body {"error": {message, type, param, code}}'}
    for code in (400, 401, 404, 429, 503)
}


# ------------------------------------------------------------------------------------------ models


def _model_object(model: str, license: str = "Apache-2.0") -> dict[str, Any]:
    return {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": "qwen", "license": license}


def _license(state) -> str:
    """The licence of the weights the service's profile runs (``/v1/models`` shows it)."""
    from models.profiles import get_profile

    return get_profile(state.settings.model_profile).license


def _listed_models(state: ServiceState) -> list[str]:
    """The enabled models' ids, then the OpenAI names taken as them (``OPENAI_MODEL_ALIASES``)."""
    models = [model for model, kind in MODEL_KIND.items() if kind.value in state.settings.enabled_models]
    return models + [alias for alias in state.settings.openai_model_aliases if models and alias not in models]


@router.get("/models", responses=ERROR_RESPONSES)
async def list_models(_: CurrentUser, state: StateDep) -> dict:
    """The enabled models: ``qwen-image`` (text-to-image) and ``qwen-image-edit`` (edit), and the
    OpenAI model names taken as the route's model (``gpt-image-1``, ``dall-e-3``…) when
    ``OPENAI_MODEL_ALIASES`` lists them."""
    return {"object": "list", "data": [_model_object(model, _license(state)) for model in _listed_models(state)]}


@router.get("/models/{model:path}", responses=ERROR_RESPONSES)
async def retrieve_model(model: str, _: CurrentUser, state: StateDep) -> dict:
    if model not in _listed_models(state):
        raise OpenAIError(
            status.HTTP_404_NOT_FOUND, f"The model '{model}' does not exist", param="model", code="model_not_found"
        )
    return _model_object(model, _license(state))


# ------------------------------------------------------------------------------------------ images


@router.post("/images/generations", responses=ERROR_RESPONSES)
async def create_image(body: ImageRequest, request: Request, user: CurrentUser, state: StateDep) -> Response:
    """Generate 1–4 images from a prompt (OpenAI's ``images.generate``); JSON body."""
    model = resolve_model(body.model, ModelKind.text_to_image, state.settings.openai_model_aliases)
    check_common(body, state.settings.model_profile)
    size = parse_size(body.size, ModelKind.text_to_image)
    return await _run(state, request, user, body, ModelKind.text_to_image, model, size, [])


EDIT_FORM_SCHEMA = {
    "type": "object",
    "required": ["image", "prompt"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "the image (JPEG, PNG, WebP; ≤ 20 MB)"},
        "image[]": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "1–2 images, as the official SDKs send a list",
        },
        **ImageRequest.model_json_schema()["properties"],
    },
}


@router.post(
    "/images/edits",
    responses=ERROR_RESPONSES,
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": EDIT_FORM_SCHEMA}}}},
)
async def edit_image(request: Request, user: CurrentUser, state: StateDep) -> Response:
    """Edit one image or compose two (OpenAI's ``images.edit``); multipart with ``image`` or ``image[]``."""
    form = await request.form(max_files=max_references(state) + 2, max_fields=64)
    uploads = form.getlist("image") + form.getlist("image[]")
    mask = form.get("mask")
    fields = {
        key: value
        for key, value in form.multi_items()
        if isinstance(value, str) and key not in ("image", "image[]", "mask")
    }
    try:
        body = ImageRequest.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    model = resolve_model(body.model, ModelKind.image_edit, state.settings.openai_model_aliases)
    check_common(body, state.settings.model_profile)
    size = parse_size(body.size, ModelKind.image_edit)
    if not uploads:
        raise invalid("image", "at least one image is required", code="missing_required_parameter")
    too_many = too_many_references(state, len(uploads))
    if too_many is not None:
        raise invalid("image", too_many)
    if len(uploads) > max_references(state):
        raise invalid("image", f"at most {MAX_EDIT_IMAGES} images can be edited together")
    no_mask = no_redraw_reason(state)
    if mask is not None and no_mask is not None:
        raise invalid("mask", no_mask)
    inputs = []
    for n, upload in enumerate(uploads, start=1):
        if not isinstance(upload, UploadFile):
            raise invalid("image", "image must be a file upload")
        data = await read_limited(upload, state.settings.max_upload_bytes)
        try:
            inputs.append(
                await asyncio.to_thread(
                    validate_upload,
                    data,
                    upload.filename or f"#{n}",
                    state.settings.max_image_pixels,
                    state.settings.max_decoded_mb * 2**20,
                )
            )
        except HTTPException as exc:
            raise invalid("image", str(exc.detail)) from None
    if mask is not None:
        inputs.append(await _read_mask(state, mask, inputs))
    return await _run(state, request, user, body, ModelKind.image_edit, model, size, inputs, masked=mask is not None)


async def _read_mask(state: ServiceState, mask: Any, inputs: list) -> Any:
    """OpenAI's ``mask``: over the first image, its size; transparent = edit (an opaque black-and-white
    mask, white = edit, is taken too). The edit model repaints one image under a mask."""
    if not isinstance(mask, UploadFile):
        raise invalid("mask", "mask must be a file upload")
    if len(inputs) != 1:
        raise invalid("mask", f"a mask works on one image here, got {len(inputs)}: send the image to repaint alone")
    data = await read_limited(mask, state.settings.max_upload_bytes)
    try:
        return await asyncio.to_thread(
            validate_mask,
            data,
            mask.filename or "mask",
            inputs[0].size,
            state.settings.max_image_pixels,
            state.settings.max_decoded_mb * 2**20,
        )
    except HTTPException as exc:
        raise invalid("mask", str(exc.detail)) from None


@router.post("/images/variations", responses=ERROR_RESPONSES)
async def create_variation(user: CurrentUser) -> Response:
    """OpenAI's ``images.create_variation`` (DALL·E 2 only there) is not offered: neither Qwen-Image
    model makes a variation without a prompt, and a guessed prompt would not be one. A 400 names
    the two ways to get one: an edit with a prompt, or a redraw at a strength."""
    raise invalid(
        "image",
        "Variations without a prompt are not offered by the Qwen-Image models. Use /v1/images/edits with a "
        "prompt such as 'a variation of this image', or the native POST /image-to-image with a prompt and "
        "a strength (0.3-0.6 keeps the composition).",
        code="unsupported_operation",
    )


async def _run(
    state: ServiceState,
    request: Request,
    user,
    body: ImageRequest,
    kind: ModelKind,
    model: str,
    size: Optional[tuple[int, int]],
    inputs: list,
    masked: bool = False,
) -> Response:
    """Create the task; answer with the images (JSON) or, with ``stream``, an event stream."""
    images = inputs[:-1] if masked else inputs
    parameters = generation_parameters(
        lambda: body.generation_parameters(kind, model, size, [image.size for image in images], masked)
    )
    if body.stream and body.partial_images:
        parameters = parameters.model_copy(update={"partial_images": body.partial_images})
    # A quality other than auto chooses the steps; left out, they are the unified model's own
    given = body.model_fields_set | ({"num_inference_steps"} if body.quality != "auto" else set())
    parameters = model_defaults(state, parameters, given)
    try:
        parameters = await apply_adapter_options(state, parameters, lora_list_text(body.loras), speed_for(body))
    except OpenAIError:
        raise
    except HTTPException as exc:
        raise invalid("loras", str(exc.detail)) from None
    try:
        webhook = await webhook_spec(
            body.webhook_url, body.webhook_events, allow_private=state.settings.webhook_allow_private_networks
        )
    except HTTPException as exc:
        raise invalid("webhook_url" if body.webhook_url else "webhook_events", str(exc.detail)) from None
    accepted = await create_task(
        state,
        user,
        task_type=kind.value,
        parameters=parameters,
        image_count=body.n,
        inputs=inputs,
        async_mode=False,
        webhook=webhook,
    )
    task_id = accepted.task_id
    if body.stream:
        return StreamingResponse(
            _stream(state, task_id, body, kind, user.id, str(getattr(request.state, "credential", "") or "")),
            media_type="text/event-stream",
            headers={"X-Task-Id": task_id, "X-Accel-Buffering": "no"},
        )
    with state.long_waits.hold(user.id):  # one of the user's capped long waits, like a native sync call
        final = await state.registry.wait(task_id, wait_budget(request, state.settings.sync_timeout_seconds))
    state.task_changed(task_id)
    try:
        if final is None:  # forgotten between creation and the wait (a clean-up with max age 0)
            raise OpenAIError(status.HTTP_404_NOT_FOUND, "The task no longer exists", code="not_found")
        found = await read_result(
            state, task_id, final.status.status, final.status.error, final.result, final.status.seed
        )
    except HTTPException as exc:
        # Failed, cancelled or still running: the client can still find (or later fetch) the task.
        exc.headers = {**(exc.headers or {}), "X-Task-Id": task_id}
        raise
    pictures, (width, height) = await asyncio.to_thread(_pictures_and_size, found, body)
    if body.response_format == "url":
        data = [{"url": _signed_url(state, request, task_id, index, body)} for index in range(len(pictures))]
    else:
        data = [{"b64_json": base64.b64encode(picture).decode()} for picture in pictures]
    content = {
        "created": int(time.time()),
        "data": data,
        "output_format": body.output_format,
        "size": f"{width}x{height}",
        "quality": resolved_quality(body.quality),
        "background": "transparent" if body.background == "transparent" else "opaque",
    }
    return JSONResponse(content, headers=result_headers(task_id, found))


def wait_budget(request: Request, sync_timeout: float) -> float:
    """How long a sync call waits: at most ``sync_timeout``, and less than the client's own read timeout.

    The official SDKs retry a request that timed out, and a retry would start a second generation.
    They send their read timeout (``x-stainless-read-timeout``), so the service answers first, with
    a 408 that says ``x-should-retry: false`` and names the task, whose result stays fetchable.
    """
    try:
        client_timeout = float(request.headers.get("x-stainless-read-timeout", ""))
    except ValueError:
        return sync_timeout
    if not client_timeout > 0:
        return sync_timeout
    return min(sync_timeout, client_timeout - min(5.0, client_timeout * 0.2))


def _pictures_and_size(found, body: ImageRequest) -> tuple[list[bytes], tuple[int, int]]:
    """The images to answer with and their size, in one trip to the thread pool."""
    pictures = _pictures(found, body)
    return pictures, images.image_size(pictures[0]) if pictures else (0, 0)


def _pictures(found, body: ImageRequest) -> list[bytes]:
    pngs = images.split_result(found.data, found.filename)
    if body.response_format == "url":
        return pngs  # converted when fetched
    return [images.convert(png, body.output_format, body.output_compression) for png in pngs]


def _signed_url(state: ServiceState, request: Request, task_id: str, index: int, body: ImageRequest) -> str:
    filename = f"{index}.{body.output_format}"
    query = state.url_signer.query(task_id, filename, body.output_compression)
    return str(request.url_for("image_file", task_id=task_id, filename=filename).include_query_params(**query))


@router.get(
    "/images/files/{task_id}/{filename}",
    name="image_file",
    responses={200: {"content": {mime: {} for mime in MEDIA_TYPES.values()}}, 403: {}, 404: {}},
)
async def image_file(
    request: Request,
    task_id: Annotated[str, Path(max_length=36)],
    filename: Annotated[str, Path(max_length=16)],
    state: StateDep,
    expires: Annotated[int, Query(ge=0, le=2**62)],
    signature: Annotated[str, Query(pattern="^[0-9a-f]{64}$")],
    compression: Annotated[Optional[int], Query(ge=0, le=100)] = None,
) -> Response:
    """One image of a ``response_format=url`` answer; no credentials, only the URL's signature and
    expiry. Fetches are limited per client address; a converted image is kept for the next fetch."""
    if state.image_fetch_limit is not None:
        address = request.client.host if request.client else "unknown"
        wait = await asyncio.to_thread(state.image_fetch_limit.hit, throttle_key("image-file", address))
        if wait is not None:
            raise OpenAIError(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "Too many image fetches from this address; try again later",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(wait)},
            )
    problem = state.url_signer.check(task_id, filename, compression, expires, signature)
    if problem is not None:
        message = "This image URL has expired" if problem == "expired" else "This image URL is not valid"
        raise OpenAIError(status.HTTP_403_FORBIDDEN, message, code=f"url_{problem}")
    index, _, output_format = filename.partition(".")
    record = await asyncio.to_thread(_record, state, task_id)
    if record is None or record.status != TaskStatus.completed.value or not record.result_path:
        raise OpenAIError(status.HTTP_404_NOT_FOUND, "The image no longer exists", code="not_found")
    cache_key = (task_id, record.result_path, filename, compression)
    cached = state.converted_images.get(cache_key) if state.converted_images is not None else None
    if cached is not None:
        return Response(cached, media_type=MEDIA_TYPES[output_format])
    found = await read_result(
        state,
        task_id,
        record.status,
        None,
        ResultLocation(result_path=record.result_path, result_filename=record.result_filename or f"{task_id}.png"),
    )
    pngs = await asyncio.to_thread(images.split_result, found.data, found.filename)
    if not index.isdigit() or int(index) >= len(pngs) or output_format not in MEDIA_TYPES:
        raise OpenAIError(status.HTTP_404_NOT_FOUND, "The image no longer exists", code="not_found")
    data = await asyncio.to_thread(images.convert, pngs[int(index)], output_format, compression)
    if state.converted_images is not None:
        state.converted_images.put(cache_key, data)
    return Response(data, media_type=MEDIA_TYPES[output_format])


def _record(state: ServiceState, task_id: str):
    from sqlmodel import Session

    with Session(state.engine) as session:
        return get_task_record(session, task_id)


# ------------------------------------------------------------------------------------------ streams


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def task_events(
    state: ServiceState, task_id: str, user_id: Optional[int], credential: str = ""
) -> AsyncIterator[Optional[TaskEvent]]:
    """The task's events from the same per-ingress event hub as ``GET /tasks/{id}/events`` (previews
    included), ending with the terminal one; None (a keep-alive) while nothing happens for KEEPALIVE_S.
    Like the native streams it ends (a 401 error) once the ``credential`` it was opened with no longer
    holds."""
    from serving.event_hub import StreamEnd, Subscription
    from serving.routes.event_streams import CREDENTIAL_RECHECK_S, close_stream, hub_for, open_stream

    hub = hub_for(state)
    sub = Subscription(user_id=user_id, task_id=task_id, previews=True, credential=credential, decoded_previews=True)
    answer = await open_stream(hub, sub, 0)  # beyond the user's open streams: a 429, sent as an error event
    try:
        if answer is None:  # gone from the registry between creation and now
            yield TaskEvent(0, "failed", task_id, user_id, TaskFailed(error="task not found"))
            return
        loop = asyncio.get_running_loop()
        next_check = loop.time() + CREDENTIAL_RECHECK_S
        while True:
            if credential and loop.time() >= next_check:
                next_check = loop.time() + CREDENTIAL_RECHECK_S
                await hub.recheck([sub])
            try:
                event = await asyncio.wait_for(sub.queue.get(), timeout=KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield None
                continue
            if isinstance(event, StreamEnd):  # the credential was revoked (or a login token expired)
                raise OpenAIError(
                    status.HTTP_401_UNAUTHORIZED,
                    "The credential this stream was opened with no longer holds",
                    code="credentials_revoked",
                )
            yield event
            if event.terminal:
                return
    finally:
        close_stream(hub, sub)


async def _stream(
    state: ServiceState, task_id: str, body: ImageRequest, kind: ModelKind, user_id: Optional[int], credential: str = ""
) -> AsyncIterator[str]:
    prefix = "image_edit" if kind.spec.takes_images else "image_generation"
    background = "transparent" if body.background == "transparent" else "opaque"
    common = {"background": background, "output_format": body.output_format, "quality": resolved_quality(body.quality)}
    sent = 0
    try:
        async for event in task_events(state, task_id, user_id, credential):
            if event is None:
                yield ": keep-alive\n\n"
            elif isinstance(event.data, PreviewImage) and event.data.decoded and sent < body.partial_images:
                # The replica decodes the partial images at the requested size when they are due
                # (models.preview.PartialDecoder); the native streams' latent previews are not used.
                preview = event.data
                picture = await asyncio.to_thread(_preview_picture, preview, body)
                yield _sse(
                    f"{prefix}.partial_image",
                    {
                        "type": f"{prefix}.partial_image",
                        "b64_json": base64.b64encode(picture).decode(),
                        "created_at": int(time.time()),
                        "size": f"{preview.width}x{preview.height}",
                        "partial_image_index": sent,
                        **common,
                    },
                )
                sent += 1
            elif event.terminal:
                # The result's location is read from the task's record (read_result does).
                error = event.data.error if isinstance(event.data, TaskFailed) else None
                seed = event.data.seed if isinstance(event.data, TaskCompleted) else None
                found = await read_result(state, task_id, event.type, error, None, seed)
                as_b64 = body.model_copy(update={"response_format": "b64_json"})
                pictures = await asyncio.to_thread(_pictures, found, as_b64)
                for picture in pictures:
                    width, height = await asyncio.to_thread(images.image_size, picture)
                    yield _sse(
                        f"{prefix}.completed",
                        {
                            "type": f"{prefix}.completed",
                            "b64_json": base64.b64encode(picture).decode(),
                            "created_at": int(time.time()),
                            "size": f"{width}x{height}",
                            **common,
                        },
                    )
                return
    except HTTPException as exc:
        # The answer has started (200): the failure travels as an error event, which the SDKs raise.
        yield _sse(
            "error",
            error_body(exc.status_code, str(exc.detail), getattr(exc, "param", None), getattr(exc, "code", None)),
        )


def _preview_picture(preview: PreviewImage, body: ImageRequest) -> bytes:
    """A partial image (a JPEG from the replica) in the format the client asked for."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(preview.b64))) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    return images.convert(buffer.getvalue(), body.output_format, body.output_compression)

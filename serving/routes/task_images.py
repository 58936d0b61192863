"""``GET /tasks/{task_id}/images/{n}``: one image of a completed task, full size or as a thumbnail;
``GET /tasks/{task_id}/inputs/{n}``: one of the images a task was sent, as uploaded.

Beyond the contract, whose ``/result`` answers one PNG or a ZIP of them: a client (the web page,
a gallery) can show each image by its own URL, without reading ZIP files. Images are numbered
from 0 in the order of the ZIP's members (``image_<prompt>_<image>.png``). Only the owner (or an
administrator) may read them: anyone else gets the same 404 as for a task that does not exist.

A task's images never change once it completed (task ids are never reused), so the answers may be
kept by the browser for a year (``private``: never by a shared cache) and revalidated by ETag.

A task's inputs (its reference images, and last an inpainting's mask) are kept as long as its
record: the web page reads them back to run an edit again after a reload.
"""

from __future__ import annotations

import asyncio
import io
from typing import Annotated, Optional

from fastapi import APIRouter, Header, HTTPException, Path, Query, status
from fastapi.responses import Response
from PIL import Image

from auth.deps import CurrentUser, SessionDep
from i18n import messages
from serving.openai.images import split_result
from serving.routes.common import owned_record, read_result
from serving.routes.tasks import task_status
from serving.state import StateDep
from serving.uploads import MEDIA_TYPES_BY_EXTENSION
from storage import TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"])

THUMBNAIL_MIN = 32
THUMBNAIL_MAX = 1024
THUMBNAIL_QUALITY = 82
CACHE_CONTROL = "private, max-age=31536000, immutable"
MAX_IMAGE_INDEX = 10_000


def thumbnail(png: bytes, size: int) -> bytes:
    """The image scaled down (never up) to ``size`` pixels on its long side, as WebP (with its alpha
    channel when it has one: a transparent result's thumbnail stays transparent)."""
    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB")
    rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, format="WEBP", quality=THUMBNAIL_QUALITY, method=4)
    return buffer.getvalue()


def etag_for(task_id: str, n: int, size: Optional[int]) -> str:
    return f'"{task_id}-{n}-{size if size is not None else "png"}"'


def etag_matches(if_none_match: Optional[str], etag: str) -> bool:
    """RFC 9110's weak comparison of ``If-None-Match`` with our ETag (``*`` matches any)."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


@router.get(
    "/{task_id}/images/{n}",
    name="task_image",
    responses={
        200: {"content": {"image/png": {}, "image/webp": {}}, "description": "the image"},
        304: {"description": "not modified (ETag)"},
        404: {"description": "no such task of yours, or no image with this number"},
        409: {"description": "the task has not completed (pending, running, failed or cancelled)"},
    },
)
async def task_image(
    task_id: Annotated[str, Path(max_length=64)],
    n: Annotated[int, Path(ge=0, le=MAX_IMAGE_INDEX, description="the image's number, from 0")],
    user: CurrentUser,
    state: StateDep,
    size: Annotated[
        Optional[int],
        Query(
            ge=THUMBNAIL_MIN,
            le=THUMBNAIL_MAX,
            description="a thumbnail (WebP) this many pixels on its long side; without it the full-size PNG",
        ),
    ] = None,
    if_none_match: Annotated[Optional[str], Header()] = None,
) -> Response:
    """Image ``n`` of a completed task: the PNG as generated, or with ``size`` a WebP thumbnail."""
    current = await task_status(state, user, task_id)
    if current.status != TaskStatus.completed.value:
        if current.status == TaskStatus.cancelled.value:
            detail = messages.TASK_CANCELLED
        elif current.status == TaskStatus.failed.value:
            detail = messages.TASK_FAILED
        else:
            detail = messages.TASK_NOT_FINISHED
        raise HTTPException(status.HTTP_409_CONFLICT, detail)
    etag = etag_for(task_id, n, size)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag_matches(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    media_type = "image/png" if size is None else "image/webp"
    cache = state.converted_images
    cache_key = ("task_image", task_id, n, size)
    data = cache.get(cache_key) if cache is not None else None
    if data is None:
        found = await read_result(state, task_id, current.status, current.error)
        pngs = await asyncio.to_thread(lambda: split_result(found.data, found.filename))
        if n >= len(pngs):
            raise HTTPException(status.HTTP_404_NOT_FOUND, messages.IMAGE_NOT_IN_TASK(n=n, count=len(pngs)))
        data = pngs[n] if size is None else await asyncio.to_thread(thumbnail, pngs[n], size)
        if cache is not None and size is not None:  # only thumbnails: a full PNG is read from the store again
            cache.put(cache_key, data)
    return Response(data, media_type=media_type, headers=headers)


@router.get(
    "/{task_id}/inputs/{n}",
    name="task_input",
    responses={
        200: {"content": {media: {} for media in MEDIA_TYPES_BY_EXTENSION.values()}, "description": "the input"},
        404: {"description": "no such task of yours, no input with this number, or no longer stored"},
    },
)
def task_input(
    task_id: Annotated[str, Path(max_length=64)],
    n: Annotated[int, Path(ge=0, le=MAX_IMAGE_INDEX, description="the input's number, from 0, in the order sent")],
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
) -> Response:
    """Input ``n`` of a task as it was uploaded: its images in the order sent, an inpainting's mask
    last. Kept as long as the task's record; any status."""
    keys = owned_record(session, user, task_id).input_keys
    if n >= len(keys):
        raise HTTPException(status.HTTP_404_NOT_FOUND, messages.INPUT_NOT_IN_TASK(n=n, count=len(keys)))
    key = keys[n]
    try:
        data = state.store.get(key)
    except FileNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, messages.INPUT_MISSING) from None
    media_type = MEDIA_TYPES_BY_EXTENSION.get(key.rpartition(".")[2], "application/octet-stream")
    return Response(data, media_type=media_type, headers={"Cache-Control": CACHE_CONTROL})

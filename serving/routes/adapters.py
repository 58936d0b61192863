"""The LoRA adapter catalogue: admins register adapters by name, users list them, requests name them.

Requests never carry paths or URLs: an adapter's weights come from where an admin said, which is
one of a Hugging Face repository (id + file), a ``.safetensors`` file under ``LORA_DIR``, or a
``.safetensors`` file uploaded here (streamed to disk under the size limit, checked to be a real
safetensors file of LoRA weights, stored under ``LORA_DIR/uploads``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

from fastapi import APIRouter, File, Form, HTTPException, UploadFile, status
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from auth.deps import AdminUser, CurrentUser, SessionDep
from i18n import messages
from models.adapters import LIGHTNING_ADAPTER, MAX_SCALE, MIN_SCALE, AdapterError, check_lora_file
from models.kinds import KIND_NAMES
from models.profiles import ADAPTER_BASES
from serving.adapter_options import adapter_reason
from serving.profile_inputs import service_profile
from serving.state import ServiceState, StateDep
from storage.adapters import get_adapter, list_adapters, others_reading
from storage.tables import Adapter

router = APIRouter(tags=["loras"])

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
UPLOADS = "uploads"
CHUNK = 1024 * 1024
RESERVED_NAMES = {LIGHTNING_ADAPTER}


class AdapterPublic(BaseModel):
    """What every user sees of an adapter."""

    name: str
    model: str
    base: str  # the model family it was trained for (models.profiles.ADAPTER_BASES)
    default_scale: float
    description: str
    trigger_words: list[str]
    created_at: datetime


class AdapterAdmin(AdapterPublic):
    """What admins see: where the weights come from too."""

    source_type: str
    source: str
    weight_name: Optional[str]
    size_bytes: Optional[int]
    sha256: Optional[str]


def bad(detail: messages.Message) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail)


def bad_param(field: str, reason: messages.Message) -> HTTPException:
    return bad(messages.PARAM_INVALID(field=field, reason=reason))


def bad_file(name: str, error: AdapterError) -> HTTPException:
    """400 for a LoRA file that failed its check (models.adapters.check_lora_file)."""
    return bad(messages.LORA_FILE_INVALID(name=name, reason=adapter_reason(error)))


@router.get("/loras", response_model=list[AdapterPublic])
def list_loras(_: CurrentUser, session: SessionDep, model: Optional[str] = None) -> list[Adapter]:
    """The adapters requests may name (``loras=name:scale,…``), optionally of one model."""
    return list_adapters(session, model)


@router.get("/admin/loras", response_model=list[AdapterAdmin])
def list_loras_admin(_: AdminUser, session: SessionDep) -> list[Adapter]:
    return list_adapters(session)


@router.post("/admin/loras", status_code=status.HTTP_201_CREATED, response_model=AdapterAdmin)
async def register_lora(
    admin: AdminUser,
    state: StateDep,
    session: SessionDep,
    name: Annotated[str, Form(pattern=NAME_PATTERN, description="how requests name it: lower case, digits, _ . -")],
    model: Annotated[str, Form(description=" or ".join(KIND_NAMES))],
    source: Annotated[
        Optional[str], Form(max_length=512, description="hub:<owner>/<repo> or local:<path under LORA_DIR>")
    ] = None,
    weight_name: Annotated[Optional[str], Form(max_length=255, description="the file in a hub repository")] = None,
    file: Annotated[Optional[UploadFile], File(description="a .safetensors file instead of a source")] = None,
    default_scale: Annotated[float, Form(ge=MIN_SCALE, le=MAX_SCALE)] = 1.0,
    description: Annotated[str, Form(max_length=1000)] = "",
    trigger_words: Annotated[str, Form(max_length=1000, description="comma-separated")] = "",
    base: Annotated[
        Optional[str],
        Form(description=f"the model family it was trained for, {' or '.join(ADAPTER_BASES)}; default the service's"),
    ] = None,
) -> Adapter:
    """Register an adapter from a hub repository, a file under ``LORA_DIR`` or an upload. Its ``base``
    must be the model family the service runs (``qwen-image-2.1`` on the 2.1 profiles)."""
    if model not in KIND_NAMES:
        raise bad_param("model", messages.ONE_OF(choices=", ".join(KIND_NAMES)))
    profile = service_profile(state)
    if base is None:
        base = profile.adapter_base
    if base not in ADAPTER_BASES:
        raise bad_param("base", messages.ONE_OF(choices=", ".join(ADAPTER_BASES)))
    if base != profile.adapter_base:
        raise bad(messages.ADAPTER_BASE_MISMATCH(service_base=profile.adapter_base, profile=profile.name, base=base))
    if name in RESERVED_NAMES:
        # The replicas hold the fast mode's adapter under this name; a catalogue entry of the same
        # name would share its place in their adapter cache.
        raise bad_param("name", messages.ADAPTER_NAME_RESERVED(name=name))
    if (source is None) == (file is None):
        raise bad(messages.SOURCE_OR_FILE)
    lora_dir = state.settings.resolved_lora_dir
    row = Adapter(
        name=name,
        model=model,
        base=base,
        source_type="",
        source="",
        default_scale=default_scale,
        description=description,
        trigger_words=[w.strip() for w in trigger_words.split(",") if w.strip()],
        created_by=admin.id,
    )
    if get_adapter(session, name) is not None:  # before anything is stored: a taken name touches no file
        raise HTTPException(status.HTTP_409_CONFLICT, messages.ADAPTER_EXISTS(name=name))
    created_file = False
    if file is not None:
        relative, size, digest, created_file = await _store_upload(
            file, lora_dir, name, state.settings.lora_max_upload_bytes, hotswap_rank(state)
        )
        row.source_type, row.source, row.size_bytes, row.sha256 = "local", relative, size, digest
    elif source is None:  # refused above already (exactly one of the two); this tells the type checker
        raise bad(messages.SOURCE_OR_FILE)
    elif source.startswith("hub:"):
        repo = source[len("hub:") :]
        if not HUB_ID.match(repo):
            raise bad_param("source", messages.HUB_SOURCE_MALFORMED)
        if not weight_name or not weight_name.endswith(".safetensors") or ".." in weight_name:
            raise bad_param("weight_name", messages.HUB_WEIGHT_NAME_REQUIRED)
        row.source_type, row.source, row.weight_name = "hub", repo, weight_name
    elif source.startswith("local:"):
        path = _inside(lora_dir, source[len("local:") :])
        try:
            await asyncio.to_thread(check_lora_file, str(path), hotswap_rank(state))
        except AdapterError as error:
            raise bad_file(source[len("local:") :], error) from None
        row.source_type, row.source, row.size_bytes = "local", str(path.relative_to(lora_dir)), path.stat().st_size
    else:
        raise bad_param("source", messages.SOURCE_PREFIX)

    def drop_stored_file() -> None:
        """A refused registration removes the file only if it stored it and no entry reads it."""
        if created_file and not others_reading(session, row):
            (lora_dir / row.source).unlink(missing_ok=True)

    cache_mb = state.settings.adapter_cache_mb
    if cache_mb and row.size_bytes and row.size_bytes > cache_mb * 1024 * 1024:
        # No replica could ever load it: refused now rather than failing every request naming it.
        drop_stored_file()
        raise bad(messages.LORA_FILE_OVER_CACHE(size_mb=f"{row.size_bytes / 2**20:.1f}", limit_mb=cache_mb))
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        drop_stored_file()
        raise HTTPException(status.HTTP_409_CONFLICT, messages.ADAPTER_EXISTS(name=name)) from None
    session.refresh(row)
    return row


@router.delete("/admin/loras/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_lora(name: str, _: AdminUser, state: StateDep, session: SessionDep) -> Response:
    """Remove an adapter from the catalogue, and its uploaded file unless another entry reads that
    file too (``local:uploads/…``). Replicas that hold it keep it until it is evicted; no new
    request can name it."""
    row = get_adapter(session, name)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, messages.ADAPTER_NOT_FOUND(name=name))
    session.delete(row)
    session.commit()
    if row.source_type == "local" and row.source.startswith(UPLOADS + "/") and not others_reading(session, row):
        (state.settings.resolved_lora_dir / row.source).unlink(missing_ok=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def hotswap_rank(state: ServiceState) -> Optional[int]:
    """With compilation, the highest adapter rank the replicas' prepared slots take; else no limit."""
    settings = state.settings
    return settings.max_adapter_rank if settings.compile_transformer else None


def _inside(root: Path, relative: str) -> Path:
    """``relative`` under ``root``, refusing anything that leaves it (``..``, absolute paths, links out)."""
    try:
        path = (root / relative).resolve()
    except (ValueError, OSError):  # a NUL byte, a link loop: no such file, not a server error
        raise bad_param("source", messages.LOCAL_PATH_UNRESOLVABLE) from None
    if not relative or os.path.isabs(relative) or not path.is_relative_to(root.resolve()):
        raise bad_param("source", messages.LOCAL_PATH_OUTSIDE)
    if not path.is_file():
        raise bad_param("source", messages.LOCAL_FILE_MISSING(path=relative))
    return path


async def _store_upload(
    upload: UploadFile, lora_dir: Path, name: str, limit: int, max_rank: Optional[int]
) -> tuple[str, int, str, bool]:
    """Copy the upload under ``LORA_DIR/uploads`` (size limit counted while copying), check it, and
    return its relative path, size, sha256 and whether this call created the file. Nothing is left
    behind when it is refused."""
    if not (upload.filename or "").lower().endswith(".safetensors"):
        raise bad(messages.LORA_FILE_NOT_SAFETENSORS)
    target_dir = lora_dir / UPLOADS
    await asyncio.to_thread(target_dir.mkdir, parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target_dir)
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        messages.LORA_UPLOAD_TOO_LARGE(limit_mb=limit // (1024 * 1024)),
                    )
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        try:
            await asyncio.to_thread(check_lora_file, staging, max_rank)
        except AdapterError as error:
            raise bad_file(upload.filename or "", error) from None
        relative = f"{UPLOADS}/{name}-{digest.hexdigest()[:12]}.safetensors"
        if (lora_dir / relative).exists():
            # The same bytes under this name are there already (kept for a `local:` entry that
            # reads them): never replaced, and never this request's to remove.
            return relative, size, digest.hexdigest(), False
        await asyncio.to_thread(shutil.move, staging, lora_dir / relative)
        return relative, size, digest.hexdigest(), True
    finally:
        if os.path.exists(staging):
            os.unlink(staging)

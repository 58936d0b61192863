"""Both models in one process over one text encoder and one VAE (the ``shared`` layout).

Qwen-Image-2512 and Qwen-Image-Edit-2511 use the same component classes for the Qwen2.5-VL text
encoder (~16 GB in bf16) and the VAE. When their weights are really the same, one copy can serve
both pipelines, so a single GPU holds both models. This module checks that they are the same —
file by file, by sha256, never by name — and refuses to share otherwise: a shared encoder with
other weights would make one model silently wrong.

The edit pipeline is loaded from its own checkpoint with the text-to-image pipeline's modules
passed in (``from_pretrained(…, text_encoder=…, vae=…)``): nothing is cast (``from_pipe`` without
an explicit dtype would cast the shared modules to float32), and each pipeline keeps a scheduler
object of its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re

from .profiles import IMAGE_EDIT, SHARED_COMPONENTS, TEXT_TO_IMAGE, ModelLoadError, Profile
from .runtime import load

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def load_shared(profile: Profile, device: str | None = None, num_threads: int | None = None) -> dict:
    """Load both kinds of ``profile`` sharing one text encoder, tokenizer and VAE.

    Returns ``{kind: LoadedModel}``. Raises ``ModelLoadError`` when the two checkpoints' shared
    components differ or cannot be compared, or when the profile's memory mode cannot share.
    """
    if not profile.pipeline_classes:  # sleep, faulty: nothing to share
        return {kind: load(profile, kind, device, num_threads) for kind in (TEXT_TO_IMAGE, IMAGE_EDIT)}
    if profile.unified:  # Qwen-Image 2.1: one pipeline is both kinds
        return load_unified(profile, device, num_threads)
    if profile.cpu_offload:
        raise ModelLoadError(
            "the shared layout cannot use model CPU offload (its hooks belong to one pipeline, and both "
            "pipelines would move the shared text encoder): use group offload (OFFLOAD=group) "
            "or the separate layout"
        )
    check_shareable(profile)
    text_to_image = load(profile, TEXT_TO_IMAGE, device, num_threads)
    image_edit = load(profile, IMAGE_EDIT, device, num_threads, share=text_to_image)
    return {TEXT_TO_IMAGE: text_to_image, IMAGE_EDIT: image_edit}


def load_unified(profile: Profile, device: str | None = None, num_threads: int | None = None) -> dict:
    """Both kinds of a unified profile (Qwen-Image 2.1) over one loaded pipeline.

    The image-edit model is the text-to-image one under its other kind: the same pipeline, adapters,
    Turbo transformer and preview map objects, so nothing is loaded twice and an adapter loaded for
    one kind is there for the other.
    """
    import dataclasses

    text_to_image = load(profile, TEXT_TO_IMAGE, device, num_threads)
    image_edit = dataclasses.replace(
        text_to_image, kind=IMAGE_EDIT, info=profile.info(IMAGE_EDIT), derived={}, load_seconds=0.0
    )
    return {TEXT_TO_IMAGE: text_to_image, IMAGE_EDIT: image_edit}


def check_shareable(profile: Profile) -> None:
    """Raise ``ModelLoadError`` unless both checkpoints' text encoder, tokenizer and VAE files match."""
    for component in SHARED_COMPONENTS:
        digests = {kind: component_digests(profile, kind, component) for kind in (TEXT_TO_IMAGE, IMAGE_EDIT)}
        if digests[TEXT_TO_IMAGE] != digests[IMAGE_EDIT]:
            differing = sorted(
                name
                for name in set(digests[TEXT_TO_IMAGE]) | set(digests[IMAGE_EDIT])
                if digests[TEXT_TO_IMAGE].get(name) != digests[IMAGE_EDIT].get(name)
            )
            raise ModelLoadError(
                f"the {component} of {profile.info(TEXT_TO_IMAGE).name} and {profile.info(IMAGE_EDIT).name} "
                f"differ ({', '.join(differing[:4])}): sharing it would run one model with the other's weights. "
                f"Use MODEL_LAYOUT=separate, or checkpoints whose {component} is the same."
            )
    log.info("text encoder, tokenizer and VAE are identical in both checkpoints: sharing them")


def component_digests(profile: Profile, kind: str, component: str) -> dict[str, str]:
    """``{file name: sha256}`` of one component folder of ``kind``'s checkpoint.

    A Hugging Face cache keeps large files as blobs named by their sha256, so a cached hub
    checkpoint is compared without reading its weights; other files are hashed.
    """
    folder = os.path.join(_checkpoint_dir(profile, kind), component)
    if not os.path.isdir(folder):
        raise ModelLoadError(f"cannot compare the {component} of {profile.info(kind).name}: no folder {folder}")
    digests = {}
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder)
            target = os.path.basename(os.path.realpath(path))
            digests[relative] = target if os.path.islink(path) and _SHA256.match(target) else _sha256(path)
    return digests


def _checkpoint_dir(profile: Profile, kind: str) -> str:
    if profile.name == "tiny":
        from .profiles import default_tiny_cache_dir
        from .tiny import ensure_tiny_pipeline

        return ensure_tiny_pipeline(kind, profile.cache_dir or default_tiny_cache_dir())
    source = profile.sources[kind]
    if profile.is_local_source(kind):
        return source
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            source,
            cache_dir=profile.cache_dir,
            allow_patterns=[f"{c}/*" for c in SHARED_COMPONENTS] + ["model_index.json"],
        )
    except Exception as error:
        raise ModelLoadError(
            f"cannot read {source}'s files to check that they can be shared ({type(error).__name__}: {error}); "
            f"download both checkpoints first, or use MODEL_LAYOUT=separate"
        ) from error


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

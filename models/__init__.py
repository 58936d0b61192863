"""Everything about diffusion: profiles, loading, generation with progress, PNG encoding.

The API is four steps::

    profile = get_profile("tiny")                     # or "qwen", "sleep"
    model = load(profile, TEXT_TO_IMAGE)              # once per process; slow for real weights
    request = GenerationRequest(prompt="a cat", num_inference_steps=20)
    result = generate(model, request, on_step=report, should_stop=cancelled)
    pngs = encode_result(model, request, result)      # encode_png(image, metadata) for one image

Importing this package does not import torch or diffusers; ``load`` and ``generate`` do.
"""

from .aspect import ASPECT_RATIOS, DEFAULT_ASPECT_RATIO, edit_output_size, size_for_aspect_ratio
from .kinds import KIND_NAMES, KindSpec, ModelKind, kind_for_task_type
from .png import encode_png, encode_result, png_metadata
from .profiles import (
    IMAGE_EDIT,
    KINDS,
    PROFILE_NAMES,
    TEXT_TO_IMAGE,
    ModelInfo,
    ModelLoadError,
    Profile,
    get_profile,
    with_memory_options,
    with_speed_options,
)
from .runtime import GenerationRequest, GenerationResult, LoadedModel, PreviewOptions, generate, load

__all__ = [
    "ASPECT_RATIOS",
    "KIND_NAMES",
    "KindSpec",
    "ModelKind",
    "kind_for_task_type",
    "DEFAULT_ASPECT_RATIO",
    "IMAGE_EDIT",
    "KINDS",
    "PROFILE_NAMES",
    "TEXT_TO_IMAGE",
    "GenerationRequest",
    "GenerationResult",
    "LoadedModel",
    "ModelInfo",
    "ModelLoadError",
    "PreviewOptions",
    "Profile",
    "edit_output_size",
    "encode_png",
    "encode_result",
    "generate",
    "get_profile",
    "with_memory_options",
    "with_speed_options",
    "load",
    "png_metadata",
    "size_for_aspect_ratio",
]

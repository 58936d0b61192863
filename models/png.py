"""PNG encoding with the generation parameters embedded as text chunks."""

from __future__ import annotations

import io
import zlib
from typing import TYPE_CHECKING

from PIL import Image
from PIL.PngImagePlugin import PngInfo

if TYPE_CHECKING:
    from .runtime import GenerationRequest, GenerationResult, LoadedModel

# zlib's run-length strategy on PNG-filtered rows: measured on 1024² photo-like images, 15-35 %
# faster than level 1's default strategy and 8-15 % smaller (level 6 is 4x slower for the same
# size). Encoding runs after the device is free, but a sync request still waits for it.
COMPRESS_LEVEL = 1
COMPRESS_TYPE = zlib.Z_RLE
SOFTWARE = "Qwen Image Service"


def encode_png(image: Image.Image, metadata: dict[str, str]) -> bytes:
    """Encode ``image`` as PNG with each ``metadata`` item as a text chunk.

    Latin-1 values go into tEXt chunks, anything else (Chinese prompts) into UTF-8 iTXt chunks.
    """
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, str(value))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=COMPRESS_LEVEL, compress_type=COMPRESS_TYPE)
    return buffer.getvalue()


def png_metadata(request: "GenerationRequest", result: "GenerationResult", model: "LoadedModel") -> dict[str, str]:
    """The text chunks for an image of ``result``: one key per parameter plus ``parameters``.

    ``parameters`` follows the A1111 layout that other image tools read: the prompt, a
    ``Negative prompt:`` line when there is one, then one line of ``Key: value`` settings.
    """
    width, height = result.images[0].size if result.images else (request.width, request.height)
    size = f"{width}x{height}"
    metadata = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": str(result.seed),
        "steps": str(request.num_inference_steps),
        "true_cfg_scale": _number(request.true_cfg_scale),
        "model": model.info.name,
        "task": model.kind,
        "size": size,
    }
    settings = [
        f"Steps: {request.num_inference_steps}",
        "Sampler: FlowMatchEuler",
        f"CFG scale: {_number(request.true_cfg_scale)}",
        f"Seed: {result.seed}",
        f"Size: {size}",
        f"Model: {model.info.name}",
    ]
    if model.kind == "image_edit":
        metadata["guidance_scale"] = _number(request.guidance_scale)
        settings.insert(3, f"Guidance scale: {_number(request.guidance_scale)}")
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    lines.append(", ".join(settings))
    metadata["parameters"] = "\n".join(lines)
    metadata["Software"] = SOFTWARE
    return metadata


def _number(value: float) -> str:
    return f"{float(value):g}"

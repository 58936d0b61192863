"""PNG encoding with the generation parameters embedded as text chunks."""

from __future__ import annotations

import io
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from zlib_ng import zlib_ng

from .kinds import ModelKind

if TYPE_CHECKING:
    from .runtime import GenerationRequest, GenerationResult, LoadedModel

# PNG is written here rather than by Pillow for speed: Pillow tries five filters on every row and
# keeps the best, which is two thirds of its encoding time and exposes no option to skip. Every
# row is filtered with "Up" (the difference to the row above: one numpy subtraction) and deflated
# at level 1 with the run-length strategy, by zlib-ng (the zlib API, vectorised): the same bytes as
# zlib's at that setting, 1.5-6x sooner. Measured on 1024² images, one core: a screenshot 11.4 ->
# 5.4 ms, a flat image 5.8 -> 0.9 ms, pure noise 24.8 -> 16.6 ms; Pillow at its fastest settings
# took 67 ms for a photo-like image, for a file 6 % smaller. The output is plain PNG (IHDR, text
# chunks, IDAT, IEND); modes other than RGB, RGBA and L go through Pillow. The encoding sits on a
# sync request's path between the end of the generation and its answer.
COMPRESS_LEVEL = 1
COMPRESS_TYPE = zlib_ng.Z_RLE
IDAT_CHUNK = 1 << 18
_COLOUR_TYPES = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}  # mode → (PNG colour type, channels)
_FILTER_UP = 2
SOFTWARE = "Qwen Image Service"


def encode_png(image: Image.Image, metadata: dict[str, str]) -> bytes:
    """Encode ``image`` as PNG with each ``metadata`` item as a text chunk.

    Latin-1 values go into tEXt chunks, anything else (Chinese prompts) into UTF-8 iTXt chunks.
    """
    if image.mode not in _COLOUR_TYPES:
        return _encode_with_pillow(image, metadata)
    colour_type, channels = _COLOUR_TYPES[image.mode]
    width, height = image.size
    pixels = np.asarray(image, dtype=np.uint8).reshape(height, width * channels)
    rows = np.empty((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 0] = _FILTER_UP
    rows[0, 1:] = pixels[0]  # the row above the first is zeros
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])  # wraps modulo 256, as PNG wants
    deflate = zlib_ng.compressobj(COMPRESS_LEVEL, zlib_ng.DEFLATED, zlib_ng.MAX_WBITS, 8, COMPRESS_TYPE)
    data = deflate.compress(rows.data) + deflate.flush()
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    out += [_text_chunk(key, str(value)) for key, value in metadata.items()]
    out += [_chunk(b"IDAT", data[i : i + IDAT_CHUNK]) for i in range(0, len(data), IDAT_CHUNK)]
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _text_chunk(key: str, value: str) -> bytes:
    keyword = key.encode("latin-1")
    if not 1 <= len(keyword) <= 79:
        raise ValueError(f"PNG text keyword must be 1-79 characters: {key!r}")
    try:
        return _chunk(b"tEXt", keyword + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:
        # not compressed, no language tag, no translated keyword
        return _chunk(b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8"))


def _encode_with_pillow(image: Image.Image, metadata: dict[str, str]) -> bytes:
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, str(value))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=COMPRESS_LEVEL, compress_type=COMPRESS_TYPE)
    return buffer.getvalue()


def png_metadata(request: GenerationRequest, result: GenerationResult, model: LoadedModel) -> dict[str, str]:
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
    if ModelKind(model.kind).spec.takes_images:
        metadata["guidance_scale"] = _number(request.guidance_scale)
        settings.insert(3, f"Guidance scale: {_number(request.guidance_scale)}")
    if request.strength is not None:
        metadata["strength"] = _number(request.strength)
        settings.append(f"Denoising strength: {_number(request.strength)}")
    if request.mask is not None:
        metadata["mask"] = "yes"
    if request.adapters:
        # A1111's "Lora hashes"-style line, by name and scale (the catalogue says where each came from).
        loras = ", ".join(f"{use.name}:{_number(use.scale)}" for use in request.adapters)
        metadata["loras"] = loras
        settings.append(f"Loras: {loras}")
    if request.fast:
        metadata["speed"] = "fast"
        settings.append("Speed: fast (Lightning)")
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    lines.append(", ".join(settings))
    metadata["parameters"] = "\n".join(lines)
    metadata["Software"] = SOFTWARE
    return metadata


def _number(value: float) -> str:
    return f"{float(value):g}"


def encode_result(model: LoadedModel, request: GenerationRequest, result: GenerationResult) -> list[bytes]:
    """The PNG of each image of ``result``, with the generation's metadata; ``OSError`` when writing fails."""
    model.profile.hooks.before_encoding(request.prompt)
    metadata = png_metadata(request, result, model)
    return [encode_png(image, metadata) for image in result.images]

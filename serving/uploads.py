"""Upload checks: size while reading, real image type by decoding, decompression bombs, EXIF."""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple, Optional

from fastapi import HTTPException, status
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.datastructures import UploadFile

from i18n import messages

ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MIN_SIDE = 16
CHUNK = 1024 * 1024
# What one decoded image may take in memory (RGB, 3 bytes a pixel), checked from the header before
# decoding: a few hundred KB of flat PNG can otherwise unfold into hundreds of MB.
DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# A stored input's media type by the extension it was stored with (GET /tasks/{id}/inputs/{n}).
MEDIA_TYPES_BY_EXTENSION = {EXTENSIONS[fmt]: media for fmt, media in ALLOWED_FORMATS.items()}


class ValidatedUpload(NamedTuple):
    """An upload that decodes cleanly: its bytes as sent, its upright size, its file extension."""

    data: bytes
    size: tuple[int, int]
    extension: str


class BodyTooLarge(HTTPException):
    def __init__(self, limit_bytes: int):
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE, messages.UPLOAD_TOO_LARGE(limit_mb=limit_bytes // (1024 * 1024))
        )


def bad_upload(name: str, reason: messages.Message) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, messages.IMAGE_INVALID(name=name, reason=reason))


async def read_limited(upload: UploadFile, limit_bytes: int) -> bytes:
    """Reads an upload (a parsed form's file part, or FastAPI's ``UploadFile`` built on it) in chunks,
    refusing it as soon as it passes ``limit_bytes``."""
    chunks, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit_bytes:
            raise BodyTooLarge(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def trailing_bytes(data: bytes, fmt: str) -> int:
    """Bytes after the image's own end marker: where polyglot files (PNG+ZIP, JPEG+HTML…) hide."""
    if fmt == "PNG":
        end = data.rfind(b"IEND")
        return len(data) - (end + 8) if end >= 0 else 0  # IEND type + CRC
    if fmt == "JPEG":
        end = data.rfind(b"\xff\xd9")
        return len(data) - (end + 2) if end >= 0 else 0
    if fmt == "WEBP" and data[:4] == b"RIFF":
        declared = int.from_bytes(data[4:8], "little") + 8
        return len(data) - declared - (declared % 2)  # RIFF pads odd sizes with one byte
    return 0


def decode_image(
    data: bytes, name: str, max_pixels: int, max_decoded_bytes: Optional[int] = DEFAULT_MAX_DECODED_BYTES
) -> Image.Image:
    """Decodes JPEG/PNG/WebP bytes (whatever Content-Type claimed), applies EXIF orientation, returns RGB.

    Sizes are checked from the header, before the pixels are decoded; the image is turned in place
    and converted only when it is not RGB already, so at most two copies exist at once.
    """
    if not data:
        raise bad_upload(name, messages.IMAGE_EMPTY)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise bad_upload(name, messages.IMAGE_FORMAT(format=image.format))
            width, height = image.size
            if width * height > max_pixels:
                raise bad_upload(
                    name, messages.IMAGE_TOO_MANY_PIXELS(width=width, height=height, max_pixels=max_pixels)
                )
            if min(width, height) < MIN_SIDE:
                raise bad_upload(name, messages.IMAGE_TOO_SMALL(width=width, height=height, min_side=MIN_SIDE))
            decoded = width * height * max(3, len(image.getbands()))
            if max_decoded_bytes is not None and decoded > max_decoded_bytes:
                raise bad_upload(
                    name,
                    messages.IMAGE_DECODES_TOO_LARGE(
                        width=width, height=height, decoded_mb=decoded // 2**20, max_mb=max_decoded_bytes // 2**20
                    ),
                )
            image.load()
            extra = trailing_bytes(data, image.format)
            if extra > 0 and data[-extra:].strip(b"\0"):  # zero padding is harmless; anything else is not
                raise bad_upload(name, messages.IMAGE_TRAILING_DATA)
            ImageOps.exif_transpose(image, in_place=True)
            return image if image.mode == "RGB" else image.convert("RGB")
    except HTTPException:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise bad_upload(name, messages.IMAGE_BOMB) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise bad_upload(name, messages.IMAGE_UNDECODABLE(error=type(exc).__name__)) from None


def validate_upload(
    data: bytes, name: str, max_pixels: int, max_decoded_bytes: Optional[int] = DEFAULT_MAX_DECODED_BYTES
) -> ValidatedUpload:
    """Every check of :func:`decode_image`; keeps the bytes as sent and lets the decoded pixels go.

    Inputs are stored as uploaded (at most the upload limit; no re-encode, which for a photo could
    be several times its size) and decoded again, upright, by the model replica (:func:`open_input`).
    """
    image = decode_image(data, name, max_pixels, max_decoded_bytes)
    size = image.size
    fmt = Image.open(io.BytesIO(data)).format or "PNG"
    image.close()
    return ValidatedUpload(data, size, EXTENSIONS.get(fmt, "png"))


def open_input(data: bytes) -> Image.Image:
    """A stored input as a pipeline takes it: EXIF orientation applied, RGB."""
    image = Image.open(io.BytesIO(data))
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return image if image.mode == "RGB" else image.convert("RGB")


def validate_mask(
    data: bytes,
    name: str,
    image_size: tuple[int, int],
    max_pixels: int,
    max_decoded_bytes: Optional[int] = DEFAULT_MAX_DECODED_BYTES,
) -> ValidatedUpload:
    """A mask in either convention people use, as the pipelines take it: an "L" PNG, white = repaint.

    - with transparency (any pixel not fully opaque): transparent = repaint, OpenAI's rule;
    - opaque (black and white, or grey): white = repaint, AUTOMATIC1111's and ComfyUI's rule.

    Every check of :func:`decode_image` first; then the upright size must be the image's, and the
    mask must mark something.
    """
    decode_image(data, name, max_pixels, max_decoded_bytes).close()
    with Image.open(io.BytesIO(data)) as raw:
        raw.load()
        upright = ImageOps.exif_transpose(raw)
        if upright.mode == "P" or (upright.mode in ("L", "RGB") and "transparency" in upright.info):
            upright = upright.convert("RGBA")
        alpha = upright.getchannel("A") if "A" in upright.getbands() else None
        if alpha is not None and _darkest(alpha) < 255:
            mask = ImageOps.invert(alpha)
        else:
            mask = upright.convert("L")
    if mask.size != image_size:
        raise bad_upload(name, messages.MASK_SIZE_MISMATCH(mask=_size(mask.size), image=_size(image_size)))
    if _lightest(mask) < 128:
        raise bad_upload(name, messages.MASK_EMPTY)
    out = io.BytesIO()
    mask.save(out, format="PNG", optimize=False)
    return ValidatedUpload(out.getvalue(), mask.size, "png")


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _darkest(channel: Image.Image) -> int:
    low, _ = channel.getextrema()  # one band: (min, max)
    return int(low)  # type: ignore[arg-type]


def _lightest(channel: Image.Image) -> int:
    _, high = channel.getextrema()
    return int(high)  # type: ignore[arg-type]

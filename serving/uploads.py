"""Upload checks: size while reading, real image type by decoding, decompression bombs, EXIF."""

from __future__ import annotations

import io
import warnings

from fastapi import HTTPException, UploadFile, status
from PIL import Image, ImageOps, UnidentifiedImageError

from models.png import encode_png
from serving import messages

ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MIN_SIDE = 16
CHUNK = 1024 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, limit_bytes: int):
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE,
                         messages.UPLOAD_TOO_LARGE(limit_mb=limit_bytes // (1024 * 1024)))


def bad_upload(name: str, reason: messages.Message) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, messages.IMAGE_INVALID(name=name, reason=reason))


async def read_limited(upload: UploadFile, limit_bytes: int) -> bytes:
    """Reads an upload in chunks, refusing it as soon as it passes ``limit_bytes``."""
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


def decode_image(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Decodes JPEG/PNG/WebP bytes (whatever Content-Type claimed), applies EXIF orientation, returns RGB."""
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
                raise bad_upload(name, messages.IMAGE_TOO_MANY_PIXELS(width=width, height=height,
                                                                          max_pixels=max_pixels))
            if min(width, height) < MIN_SIDE:
                raise bad_upload(name, messages.IMAGE_TOO_SMALL(width=width, height=height, min_side=MIN_SIDE))
            image.load()
            extra = trailing_bytes(data, image.format)
            if extra > 0 and data[-extra:].strip(b"\0"):  # zero padding is harmless; anything else is not
                raise bad_upload(name, messages.IMAGE_TRAILING_DATA)
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except HTTPException:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise bad_upload(name, messages.IMAGE_BOMB) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise bad_upload(name, messages.IMAGE_UNDECODABLE(error=type(exc).__name__)) from None


def encode_input(image: Image.Image) -> bytes:
    """Inputs are stored re-encoded as PNG: clean bytes, orientation already applied."""
    return encode_png(image, {})

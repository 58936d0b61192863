"""Upload decoding without a server: formats, polyglots, bombs, EXIF orientation."""

from __future__ import annotations

import io
import zipfile

import pytest
from fastapi import HTTPException
from PIL import Image

from serving.uploads import decode_image

pytestmark = pytest.mark.unit

MAX_PIXELS = 40_000_000


def encoded(fmt: str, size=(40, 30), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_each_allowed_format_decodes_to_rgb(fmt):
    image = decode_image(encoded(fmt), "x", MAX_PIXELS)
    assert image.mode == "RGB" and image.size == (40, 30)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_polyglot_with_a_zip_appended_is_refused(fmt):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("payload.html", "<script>alert(1)</script>")
    with pytest.raises(HTTPException) as error:
        decode_image(encoded(fmt) + archive.getvalue(), "poly", MAX_PIXELS)
    assert error.value.status_code == 400 and "多余数据" in error.value.detail


def test_other_formats_are_refused_even_when_pillow_reads_them():
    with pytest.raises(HTTPException) as error:
        decode_image(encoded("BMP"), "a.bmp", MAX_PIXELS)
    assert "BMP" in error.value.detail


def test_images_over_the_pixel_limit_are_refused_before_decoding():
    with pytest.raises(HTTPException) as error:
        decode_image(encoded("PNG", size=(300, 300)), "big", max_pixels=200 * 200)
    assert "超过上限" in error.value.detail


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image = decode_image(encoded("JPEG", size=(40, 30), exif=exif.tobytes()), "rotated", MAX_PIXELS)
    assert image.size == (30, 40)


def test_zero_padding_after_the_image_is_accepted():
    assert decode_image(encoded("JPEG") + b"\0" * 64, "padded", MAX_PIXELS).size == (40, 30)

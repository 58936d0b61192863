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


# ------------------------------------------------------------ audit finding 6


def _solid_png(side: int) -> bytes:
    """A solid-colour square: a few hundred KB that decodes to side² × 3 bytes."""
    import io as _io

    from PIL import Image as _Image

    buffer = _io.BytesIO()
    _Image.new("RGB", (side, side), (10, 200, 30)).save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def test_a_small_file_that_would_decode_to_a_huge_image_is_refused_before_decoding():
    """~120 KB of PNG, 6300×6300: 119 MB once decoded. Refused from the header, under the pixel limit."""
    from serving.uploads import DEFAULT_MAX_DECODED_BYTES

    data = _solid_png(6300)
    assert len(data) < 1_000_000
    assert MAX_PIXELS > 6300 * 6300  # under the pixel limit: only the decoded-size check refuses it
    with pytest.raises(HTTPException) as refused:
        decode_image(data, "flat.png", MAX_PIXELS, DEFAULT_MAX_DECODED_BYTES)
    assert refused.value.status_code == 400 and "MB" in refused.value.detail


def test_an_upload_is_stored_as_sent_and_opened_upright_by_the_model_replica():
    """Inputs are kept as uploaded (no re-encode, bounded by the upload limit); orientation applied on open."""
    from serving.uploads import open_input, validate_upload

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    data = encoded("JPEG", size=(40, 30), exif=exif.tobytes())
    upload = validate_upload(data, "rotated.jpg", MAX_PIXELS)
    assert upload.data is data and upload.size == (30, 40) and upload.extension == "jpg"
    image = open_input(upload.data)
    assert image.size == (30, 40) and image.mode == "RGB"

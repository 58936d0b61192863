"""PNG encoding: the image survives and the generation parameters travel in text chunks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models import GenerationRequest, GenerationResult, encode_png, get_profile, load, png_metadata

pytestmark = pytest.mark.unit


def _sleep_model(kind="text_to_image"):
    return load(get_profile("sleep", sleep_seconds_per_step=0), kind)


def test_png_round_trips_pixels_and_every_metadata_item():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    metadata = {"prompt": "一只可爱的猫", "seed": "42", "parameters": "a cat\nSteps: 20"}
    data = encode_png(image, metadata)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    decoded = Image.open(io.BytesIO(data))
    assert decoded.text == metadata
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(image))


@pytest.mark.parametrize(
    "mode, shape",
    [("RGB", (1, 1, 3)), ("RGB", (7, 300, 3)), ("RGBA", (33, 17, 4)), ("L", (64, 5)), ("RGB", (1024, 1024, 3))],
)
def test_every_row_and_channel_survives_the_fast_encoder(mode, shape):
    pixels = np.random.default_rng(len(shape) + shape[0]).integers(0, 256, shape, dtype=np.uint8)
    image = Image.fromarray(pixels, mode)
    data = encode_png(image, {"seed": "1"})
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()  # checks every chunk's CRC and the zlib stream
        assert decoded.mode == mode and decoded.size == image.size
        assert np.array_equal(np.asarray(decoded), pixels)


def test_the_image_data_is_what_zlib_itself_writes_at_the_same_settings():
    """zlib-ng deflates (for speed); the stream is byte for byte the standard library's."""
    import struct
    import zlib

    from models.png import COMPRESS_LEVEL

    rng = np.random.default_rng(7)
    smooth = np.add.outer(np.arange(256), np.arange(256)).astype(np.uint8)[..., None].repeat(3, 2)
    pixels = np.clip(smooth + rng.integers(-3, 4, smooth.shape), 0, 255).astype(np.uint8)
    data = encode_png(Image.fromarray(pixels), {})
    idat, at = b"", 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            idat += data[at + 8 : at + 8 + length]
        at += 12 + length
    deflate = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS, 8, zlib.Z_RLE)
    assert idat == deflate.compress(zlib.decompress(idat)) + deflate.flush()


def test_other_modes_are_encoded_by_pillow():
    image = Image.new("P", (10, 10), 3)
    with Image.open(io.BytesIO(encode_png(image, {"seed": "2"}))) as decoded:
        assert decoded.mode == "P" and decoded.text == {"seed": "2"}


def test_a_keyword_png_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="1-79"):
        encode_png(Image.new("RGB", (2, 2)), {"k" * 80: "v"})


def test_chinese_prompt_goes_into_an_itxt_chunk():
    data = encode_png(Image.new("RGB", (8, 8)), {"prompt": "一只可爱的猫", "seed": "1"})
    assert b"iTXtprompt" in data
    assert b"tEXtseed" in data


def test_metadata_carries_the_request_in_named_keys_and_an_a1111_parameters_line():
    request = GenerationRequest(
        prompt="a cat", negative_prompt="blurry", width=1664, height=928, num_inference_steps=30, true_cfg_scale=4.0
    )
    result = GenerationResult(
        images=[Image.new("RGB", (1664, 928))], seed=1234, interrupted=False, steps_completed=30, seconds=1.0
    )
    metadata = png_metadata(request, result, _sleep_model())
    assert metadata["prompt"] == "a cat"
    assert metadata["negative_prompt"] == "blurry"
    assert (metadata["seed"], metadata["steps"], metadata["true_cfg_scale"]) == ("1234", "30", "4")
    assert (metadata["size"], metadata["model"]) == ("1664x928", "sleep/Qwen-Image-2512")
    assert metadata["parameters"] == (
        "a cat\nNegative prompt: blurry\n"
        "Steps: 30, Sampler: FlowMatchEuler, CFG scale: 4, Seed: 1234, Size: 1664x928, Model: sleep/Qwen-Image-2512"
    )


def test_edit_metadata_includes_guidance_scale_and_the_output_size():
    request = GenerationRequest(prompt="make it red", guidance_scale=2.5, images=[Image.new("RGB", (1024, 768))])
    result = GenerationResult(
        images=[Image.new("RGB", (1184, 896))], seed=5, interrupted=False, steps_completed=50, seconds=1.0
    )
    metadata = png_metadata(request, result, _sleep_model("image_edit"))
    assert metadata["guidance_scale"] == "2.5"
    assert metadata["size"] == "1184x896"
    assert "Guidance scale: 2.5" in metadata["parameters"]
    assert "Negative prompt" not in metadata["parameters"]

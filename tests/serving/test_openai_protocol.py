"""The /v1 rules that need no service: sizes, quality, models, signed URLs, previews, formats."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from models.preview import partial_is_due
from serving.errors import error_body, retry_header
from serving.openai import images
from serving.openai.protocol import (
    ImageRequest,
    OpenAIError,
    parse_size,
    resolve_model,
    steps_for,
)
from serving.openai.routes import _preview_picture
from serving.protocol import PreviewImage
from serving.signed_urls import UrlSigner


def _png(size=(32, 16), color=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "size, expected",
    [("auto", (1024, 1024)), ("1664x928", (1664, 928)), ("1024x1536", (1024, 1536)), ("256x2048", (256, 2048))],
)
def test_sizes_within_the_rule_are_accepted(size, expected):
    assert parse_size(size, "text_to_image") == expected


def test_edit_auto_size_follows_the_input():
    assert parse_size("auto", "image_edit") is None


@pytest.mark.parametrize("size", ["100x100", "1000x1000", "4096x1024", "1024", "1024x1024x2", "-16x16", "big"])
def test_sizes_outside_the_rule_are_refused_naming_size(size):
    with pytest.raises(OpenAIError) as caught:
        parse_size(size, "text_to_image")
    assert caught.value.status_code == 400 and caught.value.param == "size"


def test_quality_maps_to_steps_and_explicit_steps_win():
    steps = {
        q: steps_for(ImageRequest(prompt="p", quality=q), "text_to_image")
        for q in ("low", "medium", "high", "standard", "hd", "auto")
    }
    assert steps == {"low": 20, "medium": 30, "high": 50, "standard": 30, "hd": 50, "auto": 50}
    assert steps_for(ImageRequest(prompt="p", quality="auto"), "image_edit") == 40
    assert steps_for(ImageRequest(prompt="p", quality="high", num_inference_steps=4), "text_to_image") == 4


def test_models_resolve_by_id_or_hugging_face_name_and_unknown_is_404():
    assert resolve_model(None, "text_to_image") == "qwen-image"
    assert resolve_model("Qwen/Qwen-Image-Edit-2511", "image_edit") == "qwen-image-edit"
    with pytest.raises(OpenAIError) as unknown:
        resolve_model("dall-e-3", "text_to_image")
    assert unknown.value.status_code == 404 and unknown.value.code == "model_not_found"
    with pytest.raises(OpenAIError) as wrong_route:
        resolve_model("qwen-image-edit", "text_to_image")
    assert wrong_route.value.status_code == 400 and wrong_route.value.param == "model"


def test_an_alias_is_the_routes_own_model_and_only_when_listed():
    aliases = ["gpt-image-1", "dall-e-3"]
    assert resolve_model("gpt-image-1", "text_to_image", aliases) == "qwen-image"
    assert resolve_model("gpt-image-1", "image_edit", aliases) == "qwen-image-edit"
    assert resolve_model("dall-e-3", "text_to_image", aliases) == "qwen-image"
    with pytest.raises(OpenAIError) as unlisted:
        resolve_model("dall-e-2", "text_to_image", aliases)
    assert unlisted.value.status_code == 404


def test_error_body_and_retry_advice():
    assert error_body(400, "bad", "size", "invalid_value") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "size", "code": "invalid_value"}
    }
    assert retry_header(429) == retry_header(500) == retry_header(400) == {"x-should-retry": "false"}
    assert retry_header(503) == {}


def test_signed_url_is_refused_when_tampered_or_expired():
    signer = UrlSigner("s" * 48, ttl_seconds=60)
    query = signer.query("task-1", "0.png", None, now=1000)
    expires, signature = int(query["expires"]), query["signature"]
    assert signer.check("task-1", "0.png", None, expires, signature, now=1030) is None
    assert signer.check("task-1", "0.png", None, expires, signature, now=1061) == "expired"
    assert signer.check("task-2", "0.png", None, expires, signature, now=1030) == "signature"
    assert signer.check("task-1", "0.webp", None, expires, signature, now=1030) == "signature"
    assert signer.check("task-1", "0.png", 50, expires, signature, now=1030) == "signature"
    assert signer.check("task-1", "0.png", None, expires + 3600, signature, now=1030) == "signature"
    assert UrlSigner("t" * 48, 60).check("task-1", "0.png", None, expires, signature, now=1030) == "signature"
    assert signer.check("tâsk", "0.png", None, expires, "é" * 64, now=1030) == "signature"


def test_partial_images_spread_over_the_run():
    sent, emitted = 0, []
    for step in range(1, 21):
        if partial_is_due(step, 20, sent, 3):
            emitted.append(step)
            sent += 1
    assert emitted == [5, 10, 15]  # three previews: at a quarter, half and three quarters of the run
    assert not any(partial_is_due(step, 20, 0, 0) for step in range(1, 21))


def test_a_latent_preview_becomes_a_partial_image_in_the_requested_format():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, format="WEBP")
    preview = PreviewImage(
        current_step=5,
        total_steps=20,
        width=16,
        height=16,
        media_type="image/webp",
        b64=base64.b64encode(buffer.getvalue()).decode(),
    )
    picture = _preview_picture(preview, ImageRequest(prompt="p", output_format="jpeg"))
    assert Image.open(io.BytesIO(picture)).format == "JPEG"


def test_zip_results_split_in_image_order_and_convert():
    import zipfile

    buffer = io.BytesIO()
    pngs = {f"image_0_{n}.png": _png(color=(n, n, n)) for n in (10, 2, 0, 1)}
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in pngs.items():
            archive.writestr(name, data)
    split = images.split_result(buffer.getvalue(), "generated_x.zip")
    assert split == [pngs["image_0_0.png"], pngs["image_0_1.png"], pngs["image_0_2.png"], pngs["image_0_10.png"]]
    assert images.convert(split[0], "png", 10) == split[0]
    small = images.convert(split[0], "jpeg", 10)
    assert Image.open(io.BytesIO(small)).format == "JPEG"
    assert Image.open(io.BytesIO(images.convert(split[0], "webp", None))).format == "WEBP"
    assert images.image_size(split[0]) == (32, 16)

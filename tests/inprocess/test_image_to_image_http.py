"""POST /image-to-image (redraw, inpaint, outpaint) and masks on POST /image-edit: what is accepted,
what is refused and what the task records (real app, stand-in registry and models, no Ray)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from models.aspect import edit_output_size
from serving.uploads import validate_mask
from tests.inprocess.conftest import make_client, png, register

pytestmark = pytest.mark.unit

EN = {"Accept-Language": "en"}


def mask_png(size=(32, 24), *, left_white=True, mode="L") -> bytes:
    """An opaque mask, white (repaint) on the left half, or a transparent-left RGBA one."""
    buffer = io.BytesIO()
    if mode == "RGBA":
        image = Image.new("RGBA", size, (0, 0, 0, 255))
        image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    else:
        image = Image.new("L", size, 0)
        if left_white:
            image.paste(255, (0, 0, size[0] // 2, size[1]))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def post(client, headers, files=None, **fields):
    data = {"prompt": "a cat", "num_inference_steps": "20", **{k: str(v) for k, v in fields.items()}}
    files = files if files is not None else [("image", ("in.png", png((320, 240)), "image/png"))]
    return client.post("/image-to-image", headers={**headers, **EN}, data=data, files=files)


def record(client, headers, response) -> dict:
    assert response.status_code == 202, response.text
    return client.get(f"/tasks/history/{response.json()['task_id']}", headers=headers).json()


def test_a_redraw_keeps_the_inputs_ratio_at_about_a_megapixel_with_the_default_strength(client, alice):
    saved = record(client, alice, post(client, alice))
    assert saved["task_type"] == "image_to_image"
    params = saved["parameters"]
    assert (params["width"], params["height"]) == edit_output_size(320, 240) == (1184, 896)
    assert params["strength"] == 0.6 and "mask" not in params and "outpaint" not in params
    stats = client.get("/tasks/statistics/me", headers=alice).json()
    assert stats["image_to_image_count"] == 1 and stats["text_to_image_count"] == 0
    listed = client.get("/tasks/history/me", headers=alice, params={"task_type": "image_to_image"}).json()
    assert listed["total"] == 1


def test_a_ratio_or_a_size_asked_for_wins_over_the_inputs(client, alice):
    assert record(client, alice, post(client, alice, aspect_ratio="16:9"))["parameters"]["width"] == 1664
    sized = record(client, alice, post(client, alice, width=512, height=512, strength=0.3))["parameters"]
    assert (sized["width"], sized["height"], sized["strength"]) == (512, 512, 0.3)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_a_mask_in_either_convention_makes_an_inpainting_at_full_strength(client, alice, mode):
    files = [
        ("image", ("in.png", png((320, 240)), "image/png")),
        ("mask", ("m.png", mask_png((320, 240), mode=mode), "image/png")),
    ]
    params = record(client, alice, post(client, alice, files=files))["parameters"]
    assert params["mask"] is True and params["strength"] == 1.0 and params["input_count"] == 1


def test_both_mask_conventions_become_the_same_white_means_repaint_mask():
    opaque = validate_mask(mask_png((32, 24)), "m.png", (32, 24), 10**7)
    transparent = validate_mask(mask_png((32, 24), mode="RGBA"), "m.png", (32, 24), 10**7)
    left, right = (2, 12), (30, 12)
    for upload in (opaque, transparent):
        mask = Image.open(io.BytesIO(upload.data))
        assert mask.mode == "L" and mask.getpixel(left) == 255 and mask.getpixel(right) == 0


@pytest.mark.parametrize(
    ("mask", "says"),
    [
        (mask_png((64, 48)), "The mask is 64x48 but the image is 320x240"),
        (mask_png((320, 240), left_white=False), "The mask marks nothing to repaint"),
    ],
)
def test_a_mask_of_another_size_or_marking_nothing_is_a_400_saying_so(client, alice, mask, says):
    files = [("image", ("in.png", png((320, 240)), "image/png")), ("mask", ("m.png", mask, "image/png"))]
    response = post(client, alice, files=files)
    assert response.status_code == 400 and says in response.json()["detail"], response.text


def test_outpainting_by_sides_or_to_a_ratio_records_the_new_canvas(client, alice):
    sides = record(client, alice, post(client, alice, extend_left=64, extend_right=32))["parameters"]
    assert sides["outpaint"] == [64, 0, 32, 0] and sides["strength"] == 1.0
    assert (sides["width"], sides["height"]) == edit_output_size(320 + 96, 240)
    wide = record(client, alice, post(client, alice, extend_to="16:9"))["parameters"]
    assert wide["outpaint"] == [53, 0, 54, 0]  # 320x240 → 427x240, centred


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"extend_to": "16:9", "extend_left": 8}, "Give extend_to or extend_left/top/right/bottom, not both"),
        ({"extend_to": "4:3"}, "already has the ratio 4:3"),
        ({"extend_to": "wide"}, "a ratio like 16:9"),
        ({"extend_left": 5000}, "extend_left"),
        ({"strength": 0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"aspect_ratio": "5:4"}, "Unsupported aspect ratio 5:4"),
        ({"extend_to": "²:1"}, "a ratio like 16:9"),
    ],
)
def test_outpainting_and_strength_fields_out_of_range_are_a_400_naming_them(client, alice, fields, says):
    response = post(client, alice, **fields)
    assert response.status_code in (400, 422) and says in str(response.json()["detail"]), response.text


def test_a_mask_and_outpainting_together_are_refused(client, alice):
    files = [
        ("image", ("in.png", png((320, 240)), "image/png")),
        ("mask", ("m.png", mask_png((320, 240)), "image/png")),
    ]
    response = post(client, alice, files=files, extend_top=64)
    assert response.status_code == 400 and "not both" in response.json()["detail"]


def test_image_edit_takes_a_mask_on_one_image_and_strength_only_with_it(client, alice):
    one = [("images", ("a.png", png((320, 240)), "image/png"))]
    mask = [("mask", ("m.png", mask_png((320, 240)), "image/png"))]
    data = {"prompt": "a hat", "num_inference_steps": "20"}
    masked = client.post("/image-edit", headers={**alice, **EN}, data={**data, "strength": "0.8"}, files=one + mask)
    params = record(client, alice, masked)["parameters"]
    assert params["mask"] is True and params["strength"] == 0.8 and params["input_count"] == 1
    two = [*one, ("images", ("b.png", png((320, 240)), "image/png"))]
    refused = client.post("/image-edit", headers={**alice, **EN}, data=data, files=two + mask)
    assert refused.status_code == 400 and refused.json()["detail"] == "A mask works on one image, got 2"
    unmasked = client.post("/image-edit", headers={**alice, **EN}, data={**data, "strength": "0.5"}, files=one)
    assert unmasked.status_code == 400 and "strength applies to masked edits" in unmasked.json()["detail"]


def test_an_outpainting_canvas_holds_no_more_pixels_than_an_upload_may(tmp_path):
    with make_client(tmp_path, max_image_pixels=4_000_000) as small:
        alice = register(small, "alice")
        response = post(small, alice, extend_to="100:1")
        assert response.status_code == 400, response.text
        assert response.json()["detail"] == "The extended canvas would be 24000x240, more than 4000000 pixels"
        wide = record(small, alice, post(small, alice, extend_left=2048, extend_right=2048))["parameters"]
        assert (wide["width"], wide["height"]) == (2048, 96)  # a 4416x240 canvas, within 2048 on the long side

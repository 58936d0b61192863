"""POST /image-to-image and masked edits through Ray Serve with the real tiny pipelines."""

from __future__ import annotations

import io

from PIL import Image

from tests.api.helpers import image_bytes, png_size


def mask_bytes(size, box) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_redraw_at_a_size_asked_for_answers_that_png_and_counts_the_steps_strength_leaves(client, user):
    response = client.post(
        "/image-to-image",
        headers=user.headers,
        files=[("image", ("in.png", image_bytes((96, 64)), "image/png"))],
        data={
            "prompt": "a watercolour",
            "strength": "0.5",
            "num_inference_steps": "20",
            "width": "512",
            "height": "256",
            "async_mode": "false",
        },
    )
    assert response.status_code == 200, response.text
    assert png_size(response.content) == (512, 256)
    status = client.get(f"/tasks/{response.headers['x-task-id']}", headers=user.headers).json()
    assert status["task_type"] == "image_to_image"
    assert status["progress"] == {"current_step": 10, "total_steps": 10, "percent": 100.0}


def test_an_inpainting_and_an_outpainting_keep_the_inputs_ratio(client, user):
    image = image_bytes((96, 64))
    inpainted = client.post(
        "/image-to-image",
        headers=user.headers,
        files=[
            ("image", ("in.png", image, "image/png")),
            ("mask", ("m.png", mask_bytes((96, 64), (0, 0, 48, 64)), "image/png")),
        ],
        data={"prompt": "a door", "num_inference_steps": "20", "async_mode": "false"},
    )
    assert inpainted.status_code == 200, inpainted.text
    width, height = png_size(inpainted.content)
    assert abs(width / height - 96 / 64) < 0.1
    outpainted = client.post(
        "/image-to-image",
        headers=user.headers,
        files=[("image", ("in.png", image, "image/png"))],
        data={"prompt": "more sky", "extend_to": "1:1", "num_inference_steps": "20", "async_mode": "false"},
    )
    assert outpainted.status_code == 200, outpainted.text
    width, height = png_size(outpainted.content)
    assert width == height


def test_a_masked_edit_answers_a_png(client, user):
    response = client.post(
        "/image-edit",
        headers=user.headers,
        files=[
            ("images", ("in.png", image_bytes((96, 64)), "image/png")),
            ("mask", ("m.png", mask_bytes((96, 64), (48, 0, 96, 64)), "image/png")),
        ],
        data={"prompt": "a red hat", "num_inference_steps": "20", "strength": "0.9", "async_mode": "false"},
    )
    assert response.status_code == 200, response.text
    record = client.get(f"/tasks/history/{response.headers['x-task-id']}", headers=user.headers).json()
    assert record["parameters"]["mask"] is True and record["parameters"]["strength"] == 0.9

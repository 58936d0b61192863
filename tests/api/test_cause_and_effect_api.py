"""Every generation route passes each of its inputs to the model: through the real service and the
tiny pipelines, another prompt, seed, input image, strength or mask gives other pixels, the same
request gives the same pixels (the plumbing test each route gets)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.pixels import pixel_difference

# Well above 0 (the same request gives exactly 0) and below the smallest change measured here: an
# edit's prompt at about a megapixel moves 2.1 of 255 (the edit keeps its input), a redraw's 20+.
CHANGED = 1.0
STEPS = "20"


def picture(seed: int, size=(128, 96)) -> bytes:
    """A smooth picture (the tiny VAE keeps block colours): a gradient with a seeded tint."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, size[0])[None, :, None]
    y = np.linspace(0, 1, size[1])[:, None, None]
    tint = rng.uniform(0, 255, 3)
    pixels = (tint * (0.3 + 0.7 * x) * (1 - 0.5 * y)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.broadcast_to(pixels, (size[1], size[0], 3)).copy()).save(buffer, format="PNG")
    return buffer.getvalue()


def mask(box, size=(128, 96)) -> bytes:
    image = Image.new("L", size, 0)
    image.paste(255, box)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run(client, user, path: str, fields: dict, files: dict) -> Image.Image:
    data = {"num_inference_steps": STEPS, "async_mode": "false", "seed": "7", **fields}
    parts = [(name, (f"{name}.png", content, "image/png")) for name, content in files.items()]
    response = client.post(path, headers=user.headers, data=data, files=parts or None)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content)).convert("RGB")


SIZE = {"width": "512", "height": "384"}  # the pictures' 4:3, small enough to be quick
ROUTES = {
    "/text-to-image": ({"prompt": "a red fox", "width": "256", "height": "256"}, {}),
    "/image-edit": ({"prompt": "a red fox"}, {"images": picture(1)}),
    "/image-edit/batch": ({"prompts": "a red fox"}, {"image": picture(1)}),
    "/image-to-image": ({"prompt": "a red fox", "strength": "0.7", **SIZE}, {"image": picture(1)}),
}


@pytest.mark.parametrize("path", list(ROUTES))
def test_the_same_request_repeats_and_another_prompt_or_seed_changes_the_pixels(client, user, path):
    fields, files = ROUTES[path]
    prompt_field = "prompts" if path.endswith("batch") else "prompt"
    first = run(client, user, path, fields, files)
    assert pixel_difference(first, run(client, user, path, fields, files)) == 0
    assert pixel_difference(first, run(client, user, path, {**fields, prompt_field: "a blue whale"}, files)) > CHANGED
    assert pixel_difference(first, run(client, user, path, {**fields, "seed": "8"}, files)) > CHANGED
    if files:
        name = next(iter(files))
        other = run(client, user, path, fields, {**files, name: picture(2)})
        assert pixel_difference(first, other) > CHANGED


def test_strength_and_mask_reach_the_redraw(client, user):
    source = picture(3)
    original = Image.open(io.BytesIO(source)).convert("RGB")
    fields = {"prompt": "a red fox", **SIZE}
    light = run(client, user, "/image-to-image", {**fields, "strength": "0.1"}, {"image": source})
    heavy = run(client, user, "/image-to-image", {**fields, "strength": "0.9"}, {"image": source})
    kept = original.resize(light.size, Image.Resampling.LANCZOS)  # as the service scales it
    light_off, heavy_off = pixel_difference(kept, light), pixel_difference(kept, heavy)
    assert heavy_off - light_off > CHANGED, (light_off, heavy_off)  # 0.1 stays closer than 0.9
    inpainted = run(client, user, "/image-to-image", fields, {"image": source, "mask": mask((0, 0, 64, 96))})
    half = inpainted.size[0] // 2
    right = (half + inpainted.size[0] // 8, 0, inpainted.size[0], inpainted.size[1])
    left = (0, 0, half - inpainted.size[0] // 8, inpainted.size[1])
    assert pixel_difference(inpainted.crop(right), kept.crop(right)) < 2  # the unmasked side is the original's
    assert pixel_difference(inpainted.crop(left), kept.crop(left)) > CHANGED  # the masked side was redrawn

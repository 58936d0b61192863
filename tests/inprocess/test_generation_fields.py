"""What the generation routes accept: a field they do not take is a 400 naming it, never silently
ignored; text-to-image takes a size in pixels beside the contract's ratios (real app, no Ray)."""

from __future__ import annotations

import pytest

from tests.inprocess.conftest import png

pytestmark = pytest.mark.unit

EDIT_FILES = [("images", ("a.png", png(), "image/png"))]


@pytest.mark.parametrize(
    ("path", "extra", "files"),
    [
        ("/text-to-image", {"widht": "512"}, None),
        ("/text-to-image", {"mask": "x", "strength": "0.3"}, None),
        ("/image-edit", {"extend_left": "64"}, EDIT_FILES),
        ("/image-edit/batch", {"size": "512x512"}, [("image", ("a.png", png(), "image/png"))]),
    ],
)
def test_a_field_the_route_does_not_take_is_a_400_naming_it_and_the_ones_it_takes(client, alice, path, extra, files):
    data = {"prompt": "a cat", "prompts": "a|b", **extra}
    if path != "/image-edit/batch":
        data.pop("prompts")
    else:
        data.pop("prompt")
    response = client.post(path, headers={**alice, "Accept-Language": "en"}, data=data, files=files)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    unknown, _, accepted = detail.partition("; this route accepts: ")
    assert unknown == "Unknown field(s): " + ", ".join(sorted(extra))
    assert "num_inference_steps" in accepted.split(", ") and "seed" in accepted.split(", ")
    assert client.get("/tasks/history/me", headers=alice).json()["total"] == 0  # nothing was created


def test_unknown_fields_from_a_stranger_are_a_401_first(client):
    response = client.post("/text-to-image", data={"prompt": "a cat", "widht": "512"})
    assert response.status_code == 401


def test_width_and_height_give_that_size_and_the_record_says_so(client, alice):
    response = client.post(
        "/text-to-image",
        headers=alice,
        data={"prompt": "a cat", "width": "512", "height": "256", "num_inference_steps": "20"},
    )
    assert response.status_code == 202, response.text
    record = client.get(f"/tasks/history/{response.json()['task_id']}", headers=alice).json()
    assert record["parameters"]["width"] == 512 and record["parameters"]["height"] == 256
    assert "aspect_ratio" not in record["parameters"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"width": "512"}, "Give aspect_ratio, or both width and height, not a mix"),
        ({"width": "512", "height": "512", "aspect_ratio": "1:1"}, "Give aspect_ratio, or both width and height"),
        ({"width": "500", "height": "512"}, "Parameter width: a multiple of 16 from 256 to 2048, got 500"),
        ({"width": "512", "height": "4096"}, "Parameter height: a multiple of 16 from 256 to 2048, got 4096"),
        ({"width": "128", "height": "512"}, "Parameter width: a multiple of 16 from 256 to 2048, got 128"),
    ],
)
def test_a_size_in_pixels_is_both_sides_valid_and_without_a_ratio(client, alice, fields, says):
    response = client.post(
        "/text-to-image", headers={**alice, "Accept-Language": "en"}, data={"prompt": "a cat", **fields}
    )
    assert response.status_code == 400 and response.json()["detail"].startswith(says), response.text

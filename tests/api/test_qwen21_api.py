"""Qwen-Image 2.1 over the API: ``/q21`` runs the ``tiny21`` profile (one replica, one pipeline for
both kinds, on the CPU) on the session's Serve.

The tiny 2.1 pipeline costs ~0.14 s a step at 256²: images stay at 256², and steps at 2 on ``/v1``
(the native routes take at least 20).
"""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from models.profiles import QWEN21_TURBO_STEPS, QWEN_RESEARCH_LICENSE
from tests.api.helpers import wait_status
from tests.api.sse import collect
from tests.conftest import TestUser

SIZE = {"width": "256", "height": "256"}
FEW = {"num_inference_steps": 2}


def picture(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def rgba_png(size=(96, 64)) -> bytes:
    image = Image.new("RGBA", size, (30, 160, 60, 255))
    image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def dana(tiny21_client) -> TestUser:
    """A user of ``/q21`` with an API key and an ``openai`` SDK client (``dana.sdk``)."""
    user = TestUser(tiny21_client)
    response = tiny21_client.post("/auth/api-keys", headers=user.headers, json={"name": "q21"})
    assert response.status_code == 201, response.text
    user.sdk = OpenAI(
        base_url=f"{str(tiny21_client.base_url).rstrip('/')}/v1", api_key=response.json()["key"], timeout=120
    )
    return user


def submit(client: httpx.Client, user: TestUser, **fields) -> str:
    data = {"prompt": "a glass fox", **SIZE, "num_inference_steps": "20", **{k: str(v) for k, v in fields.items()}}
    response = client.post("/text-to-image", headers=user.headers, data=data)
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def test_the_official_sdk_generates_a_transparent_png(dana):
    result = dana.sdk.images.generate(
        prompt="a sticker of a fox", size="256x256", background="transparent", output_format="png", extra_body=FEW
    )
    image = picture(base64.b64decode(result.data[0].b64_json))
    assert image.format == "PNG" and image.mode == "RGBA" and image.size == (256, 256)
    low, high = image.getchannel("A").getextrema()
    assert low < high  # the alpha the model drew, not a flat opaque layer
    assert result.background == "transparent"
    assert {m.id: m.model_extra["license"] for m in dana.sdk.models.list()}["qwen-image"] == QWEN_RESEARCH_LICENSE


def test_models_says_what_the_profile_does_and_not_what_it_refuses(tiny21_client):
    models = tiny21_client.get("/models").json()
    assert "transparent output" in models["text_to_image"]["capabilities"]
    assert models["text_to_image"]["task_types"] == ["text_to_image"]  # no redraws: their route refuses them
    assert models["text_to_image"]["extra_capabilities"] == []
    assert models["image_edit"]["extra_capabilities"] == ["edit with 1-4 reference images"]
    assert {models[kind]["license"] for kind in models} == {QWEN_RESEARCH_LICENSE}


def test_an_edit_takes_several_references_one_of_them_rgba(tiny21_client, dana):
    references = [
        ("a.png", rgba_png(), "image/png"),
        ("b.png", rgba_png((64, 64)), "image/png"),
        ("c.png", rgba_png((64, 96)), "image/png"),
    ]
    response = dana.sdk.images.with_raw_response.edit(
        prompt="the three together", image=references, size="256x256", extra_body=FEW
    )
    image = picture(base64.b64decode(response.parse().data[0].b64_json))
    assert image.size == (256, 256) and image.mode == "RGB"  # no background asked: composited, opaque
    task = tiny21_client.get(f"/tasks/history/{response.headers['x-task-id']}", headers=dana.headers).json()
    assert task["status"] == "completed" and task["parameters"]["input_count"] == 3


def test_text_to_image_streams_previews_and_ends_with_an_opaque_png(tiny21_client, dana):
    task_id = submit(tiny21_client, dana)
    events = collect(tiny21_client, f"/tasks/{task_id}/events", dana.headers)
    previews = [e for e in events if e.event == "preview"]
    assert previews and events[-1].event == "completed"
    for preview in previews:
        shown = picture(base64.b64decode(preview.data["b64"]))
        assert shown.size == (preview.data["width"], preview.data["height"]) and shown.width == shown.height
        assert 0 < preview.data["current_step"] < preview.data["total_steps"] == 20
    result = tiny21_client.get(f"/tasks/{task_id}/result", headers=dana.headers)
    assert result.status_code == 200
    image = picture(result.content)
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (256, 256)


def test_fast_mode_runs_turbo_on_its_own_grid(tiny21_client, dana):
    task_id = submit(tiny21_client, dana, speed="fast")
    final = wait_status(tiny21_client, dana.headers, task_id)
    assert final["status"] == "completed", final
    assert final["progress"]["total_steps"] == QWEN21_TURBO_STEPS
    parameters = tiny21_client.get(f"/tasks/history/{task_id}", headers=dana.headers).json()["parameters"]
    assert (parameters["speed"], parameters["num_inference_steps"], parameters["true_cfg_scale"]) == (
        "fast",
        QWEN21_TURBO_STEPS,
        1.0,
    )


def test_a_running_task_is_cancelled_at_the_next_step(tiny21_client, dana):
    task_id = submit(tiny21_client, dana, num_inference_steps=100)
    deadline = time.monotonic() + 120
    while True:
        status = tiny21_client.get(f"/tasks/{task_id}", headers=dana.headers).json()
        if status["status"] == "running" and (status.get("progress") or {}).get("current_step", 0) >= 2:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert tiny21_client.delete(f"/tasks/{task_id}", headers=dana.headers).status_code == 200
    final = wait_status(tiny21_client, dana.headers, task_id)
    assert final["status"] == "cancelled" and final["progress"]["current_step"] < 100


def test_a_redraw_is_refused_at_the_route_naming_the_profile(tiny21_client, dana):
    response = tiny21_client.post(
        "/image-to-image",
        headers={**dana.headers, "Accept-Language": "en"},
        data={"prompt": "redraw"},
        files=[("image", ("in.png", rgba_png(), "image/png"))],
    )
    assert response.status_code == 400 and "tiny21 profile" in response.json()["detail"]

"""LoRA adapters and fast mode end to end: real replicas on the tiny profile, real LoRA files.

The adapter is a real ``.safetensors`` LoRA for the tiny transformer, uploaded through the
catalogue; the replicas load it through diffusers' ``load_lora_weights`` and record it in the PNG.
"""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from models.tiny_adapter import build_tiny_lora
from serving.deployments import REPLICA_REPORT_INTERVAL_S


@pytest.fixture(scope="module")
def ink(client, admin_headers, tmp_path_factory) -> str:
    path = build_tiny_lora("text_to_image", str(tmp_path_factory.mktemp("ink")), seed=21, strength=2.0)
    with open(path, "rb") as file:
        response = client.post(
            "/admin/loras",
            headers=admin_headers,
            data={"name": "ink-api", "model": "text_to_image", "default_scale": "0.5"},
            files={"file": ("ink.safetensors", file, "application/octet-stream")},
        )
    assert response.status_code == 201, response.text
    return "ink-api"


def generate(client, headers, **fields) -> bytes:
    data = {
        "prompt": "a lighthouse",
        "num_inference_steps": "20",
        "seed": "99",
        "async_mode": "false",
        "aspect_ratio": "1:1",
        **fields,
    }
    response = client.post("/text-to-image", headers=headers, data=data)
    assert response.status_code == 200, response.text
    return response.content


def png_text(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.text)


def test_an_adapter_named_by_a_request_changes_its_image_and_is_recorded(client, user, ink):
    base = generate(client, user.headers)
    styled = generate(client, user.headers, loras=ink)
    again = generate(client, user.headers)
    assert styled != base and again == base  # the next request without it runs the base model
    text = png_text(styled)
    assert text["loras"] == "ink-api:0.5" and "Loras: ink-api:0.5" in text["parameters"]
    assert "loras" not in png_text(base)


def test_fast_mode_runs_four_steps_with_the_lightning_adapter(client, user):
    fast = generate(client, user.headers, speed="fast")
    text = png_text(fast)
    assert text["speed"] == "fast" and text["steps"] == "4" and text["true_cfg_scale"] == "1"


def test_requests_naming_an_adapter_go_to_the_replica_that_already_holds_it(client, user, ink):
    # Two idle replicas each time: the router sends every one to the replica that ran the adapter
    # (Serve's own router would split them between the two about evenly).
    for _ in range(3):
        generate(client, user.headers, loras=ink)
    time.sleep(REPLICA_REPORT_INTERVAL_S + 1)  # every replica has reported since the last request
    replicas = client.get("/health").json()["model_memory"]["text_to_image"]["replicas"]
    assert len(replicas) == 2
    assert sorted(ink in replica["adapters_loaded"] for replica in replicas) == [False, True]

"""/v1 error bodies that need no model: a disabled model, an oversized body, a failed task (no Ray)."""

from __future__ import annotations

import pytest

from tests.inprocess.conftest import FAIL, make_client, png, register

pytestmark = pytest.mark.unit

ERROR_FIELDS = {"message", "type", "param", "code"}


def test_a_disabled_model_is_503_and_may_be_retried(tmp_path):
    with make_client(tmp_path, enabled_models="text_to_image") as client:
        headers = register(client, "dave")
        response = client.post(
            "/v1/images/edits", headers=headers, data={"prompt": "x"}, files={"image": ("a.png", png(), "image/png")}
        )
        assert response.status_code == 503 and set(response.json()["error"]) == ERROR_FIELDS
        assert response.json()["error"]["message"] == "The image-edit model is not loaded"
        assert "x-should-retry" not in response.headers  # nothing was created: a retry is harmless
        listed = [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]]
        assert listed[0] == "qwen-image" and "qwen-image-edit" not in listed  # then the OpenAI names it takes


def test_an_oversized_body_is_413_in_openais_shape(client, alice):
    response = client.post(
        "/v1/images/generations",
        headers={**alice, "Content-Type": "application/json"},
        content=b'{"prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}',
    )
    assert response.status_code == 413 and response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_failed_task_is_500_not_retried_and_names_the_task(client, alice):
    response = client.post(
        "/v1/images/generations",
        headers=alice,
        json={"prompt": f"{FAIL} now", "size": "256x256", "num_inference_steps": 2},
    )
    assert response.status_code == 500 and response.headers["x-should-retry"] == "false"
    task_id = response.headers["x-task-id"]
    assert client.get(f"/tasks/{task_id}", headers=alice).json()["status"] == "failed"
    assert response.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_nul_in_a_prompt_is_an_openai_400_naming_the_field(client, alice, field):
    fields = {"prompt": "a cat", field: "a\x00cat"}
    generation = client.post("/v1/images/generations", headers=alice, json={**fields, "size": "256x256"})
    edit = client.post("/v1/images/edits", headers=alice, data=fields, files={"image": ("a.png", png(), "image/png")})
    for response in (generation, edit):
        assert response.status_code == 400 and response.headers["x-should-retry"] == "false"
        error = response.json()["error"]
        assert set(error) == ERROR_FIELDS and (error["param"], error["code"]) == (field, "invalid_value")
        assert "NUL" in error["message"]
    history = client.get("/tasks/history/me", headers=alice).json()
    assert history["total"] == 0  # nothing was created

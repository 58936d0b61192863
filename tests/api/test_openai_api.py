"""The OpenAI-compatible /v1 API and API keys, with the official ``openai`` SDK as the client.

Images are small (256² or so) with few steps: the tiny pipelines then take a fraction of a second.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sqlite3
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from tests.api.helpers import image_bytes, wait_status
from tests.conftest import sleep_app_args

FAST = {"num_inference_steps": 2}
ERROR_FIELDS = {"message", "type", "param", "code"}


def sdk(base_url: str, key: str, **options) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key=key, **{"timeout": 120, **options})


def new_key(client: httpx.Client, headers: dict, name: str = "tests", **fields) -> dict:
    response = client.post("/auth/api-keys", headers=headers, json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def openai_error(response: httpx.Response, status: int, param=None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_FIELDS and error["message"]
    assert error["param"] == param
    return error


@pytest.fixture
def keyed(client, user):
    """A user with an API key (``user.key``) and an SDK client using it (``user.sdk``)."""
    user.key = new_key(client, user.headers)["key"]
    user.sdk = sdk(str(client.base_url).rstrip("/"), user.key)
    return user


# ------------------------------------------------------------------------------------------ API keys


def test_api_key_is_shown_once_stored_as_a_hash_and_works_until_revoked(client, base_url, user, data_root):
    created = new_key(client, user.headers, name="script", expires_in_days=30)
    key = created["key"]
    assert key.startswith("qis-") and len(key) >= 4 + 43  # 32 random bytes, base64url
    assert created["prefix"] == key[:12] and created["name"] == "script" and created["expires_at"]
    listed = client.get("/auth/api-keys", headers=user.headers).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and key not in json.dumps(listed) and listed[0]["last_used_at"] is None
    with sqlite3.connect(data_root / "main" / "qwen_image.db") as db:
        row = db.execute("SELECT * FROM api_keys WHERE id = ?", (created["id"],)).fetchone()
    assert hashlib.sha256(key.encode()).hexdigest() in row and key not in row

    assert client.get("/auth/me", headers={"Authorization": f"Bearer {key}"}).json()["id"] == user.id
    assert [m.id for m in sdk(base_url, key).models.list()][:2] == ["qwen-image", "qwen-image-edit"]
    assert client.get("/auth/api-keys", headers=user.headers).json()[0]["last_used_at"] is not None

    assert client.delete(f"/auth/api-keys/{created['id']}", headers=user.headers).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        sdk(base_url, key).models.list()
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert client.get("/auth/api-keys", headers=user.headers).json() == []


def test_a_key_stops_when_it_expires_or_its_user_is_disabled_or_deleted(client, make_user, admin_headers, data_root):
    owner, other = make_user(), make_user()
    expiring, disabled_key, deleted_key = (new_key(client, owner.headers, name=n) for n in ("a", "b", "c"))
    bearer = lambda k: {"Authorization": f"Bearer {k['key']}"}  # noqa: E731
    # Expiry is days away; move it into the past in the database rather than wait.
    with sqlite3.connect(data_root / "main" / "qwen_image.db") as db:
        db.execute("UPDATE api_keys SET expires_at = '2020-01-01 00:00:00' WHERE id = ?", (expiring["id"],))
    assert client.get("/auth/me", headers=bearer(expiring)).status_code == 401
    # Someone else's key is not found; an admin sees and revokes anyone's.
    assert client.delete(f"/auth/api-keys/{disabled_key['id']}", headers=other.headers).status_code == 404
    everyone = client.get("/auth/api-keys/all", headers=admin_headers, params={"user_id": owner.id}).json()
    assert {k["id"] for k in everyone} == {expiring["id"], disabled_key["id"], deleted_key["id"]}
    assert client.get("/auth/api-keys/all", headers=owner.headers).status_code == 403
    assert client.delete(f"/auth/api-keys/{expiring['id']}", headers=admin_headers).status_code == 200

    assert client.get("/auth/me", headers=bearer(disabled_key)).status_code == 200
    client.put(f"/auth/users/{owner.id}/toggle-active", headers=admin_headers)
    assert client.get("/auth/me", headers=bearer(disabled_key)).status_code == 401
    client.put(f"/auth/users/{owner.id}/toggle-active", headers=admin_headers)
    assert client.get("/auth/me", headers=bearer(deleted_key)).status_code == 200
    assert client.delete(f"/auth/users/{owner.id}", headers=admin_headers).status_code == 200
    assert client.get("/auth/me", headers=bearer(deleted_key)).status_code == 401
    assert client.get("/auth/api-keys/all", headers=admin_headers, params={"user_id": owner.id}).json() == []


# ------------------------------------------------------------------------------------------ generations


def test_generate_b64_images_with_a_seed_is_reproducible_counted_and_in_history(client, keyed, make_user):
    quota_before = client.get("/tasks/quota/me", headers=keyed.headers).json()["used_today"]

    def generate():
        raw = keyed.sdk.images.with_raw_response.generate(
            model="qwen-image", prompt="一只猫", n=2, size="256x512", extra_body={**FAST, "seed": 7}
        )
        return raw.headers["x-task-id"], raw.parse()

    task_id, result = generate()
    assert result.size == "256x512" and result.output_format == "png" and result.background == "opaque"
    pictures = [base64.b64decode(item.b64_json) for item in result.data]
    assert len(pictures) == 2 and pictures[0] != pictures[1]
    assert all(
        decoded(item.b64_json).format == "PNG" and decoded(item.b64_json).size == (256, 512) for item in result.data
    )
    assert [base64.b64decode(item.b64_json) for item in generate()[1].data] == pictures

    record = client.get(f"/tasks/history/{task_id}", headers=keyed.headers).json()
    assert record["task_type"] == "text_to_image" and record["status"] == "completed" and record["seed"] == 7
    assert record["parameters"]["api"] == "openai" and record["parameters"]["num_inference_steps"] == 2
    assert client.get("/tasks/quota/me", headers=keyed.headers).json()["used_today"] == quota_before + 4
    assert client.get(f"/tasks/{task_id}", headers=make_user().headers).status_code == 404


def test_generate_url_is_fetched_without_credentials_and_refused_when_tampered_or_expired(client, keyed, data_root):
    from serving.signed_urls import UrlSigner

    raw = keyed.sdk.images.with_raw_response.generate(
        prompt="a fox",
        size="512x256",
        response_format="url",
        output_format="jpeg",
        output_compression=40,
        quality="low",
        extra_body=FAST,
    )
    result = raw.parse()
    assert result.output_format == "jpeg" and result.quality == "low" and result.data[0].b64_json is None
    url = result.data[0].url
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(fetched.content)).size == (512, 256)

    tampered = url.replace("/0.jpeg", "/0.png")
    assert openai_error(httpx.get(tampered, timeout=30), 403)["code"] == "url_signature"
    secret = (data_root / "main" / "jwt_secret").read_text().strip()
    task_id = raw.headers["x-task-id"]
    old = UrlSigner(secret, 3600).query(task_id, "0.jpeg", 40, now=time.time() - 7200)
    expired = httpx.get(url.split("?")[0], params=old, timeout=30)
    assert openai_error(expired, 403)["code"] == "url_expired"


def test_generate_webp_with_extras(keyed):
    result = keyed.sdk.images.generate(
        prompt="海边",
        size="256x256",
        output_format="webp",
        quality="hd",
        extra_body={**FAST, "negative_prompt": "blurry", "true_cfg_scale": 2.5},
    )
    image = decoded(result.data[0].b64_json)
    assert image.format == "WEBP" and image.size == (256, 256) and result.quality == "high"


def test_edit_composes_two_images_sent_as_image_list(keyed):
    # One image (the ``image`` part) is edited in the stream test below.
    two = keyed.sdk.images.edit(
        model="Qwen/Qwen-Image-Edit-2511",
        prompt="合成两张图",
        size="512x256",
        output_format="jpeg",
        image=[
            ("a.png", image_bytes((64, 64)), "image/png"),
            ("b.webp", image_bytes((64, 64), fmt="WEBP"), "image/webp"),
        ],
        extra_body=FAST,
    )
    picture = decoded(two.data[0].b64_json)
    assert picture.format == "JPEG" and picture.size == (512, 256) and two.size == "512x256"


def test_edit_with_an_openai_mask_repaints_the_transparent_region_of_the_image(client, keyed):
    mask = Image.new("RGBA", (96, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 48, 64))  # transparent = edit, OpenAI's rule
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    edited = keyed.sdk.images.edit(
        prompt="a red door",
        image=("in.png", image_bytes((96, 64)), "image/png"),
        mask=("mask.png", buffer.getvalue(), "image/png"),
        size="512x256",
        extra_body=FAST,
    )
    assert decoded(edited.data[0].b64_json).size == (512, 256)
    record = client.get("/tasks/history/me", headers=keyed.headers, params={"page_size": 1}).json()["items"][0]
    assert record["parameters"]["mask"] is True and record["parameters"]["input_count"] == 1
    with pytest.raises(openai.BadRequestError) as refused:
        keyed.sdk.images.edit(
            prompt="x",
            image=("in.png", image_bytes((96, 64)), "image/png"),
            mask=("mask.png", image_bytes((32, 32)), "image/png"),
        )
    assert refused.value.body["param"] == "mask" and "32x32" in refused.value.body["message"]


def test_openai_model_names_run_the_routes_model_and_are_listed(client, keyed):
    listed = [m.id for m in keyed.sdk.models.list()]
    assert listed[:2] == ["qwen-image", "qwen-image-edit"]
    assert {"gpt-image-1", "dall-e-3", "dall-e-2"} <= set(listed[2:])
    assert keyed.sdk.models.retrieve("dall-e-3").id == "dall-e-3"
    generated = keyed.sdk.images.generate(model="dall-e-3", prompt="an alias", size="256x256", extra_body=FAST)
    assert decoded(generated.data[0].b64_json).size == (256, 256)
    edited = keyed.sdk.images.edit(
        model="gpt-image-1", image=("in.png", image_bytes((64, 64)), "image/png"), prompt="x", extra_body=FAST
    )
    assert edited.data[0].b64_json
    history = client.get("/tasks/history/me", headers=keyed.headers).json()["items"]
    models = {item["task_type"]: item["parameters"]["model"] for item in history[:2]}
    assert models == {"text_to_image": "qwen-image", "image_edit": "qwen-image-edit"}  # the model that ran
    with pytest.raises(openai.NotFoundError):
        keyed.sdk.images.generate(model="gpt-4o", prompt="x", size="256x256", extra_body=FAST)


def test_variations_are_a_400_naming_the_alternatives(keyed):
    with pytest.raises(openai.BadRequestError) as refused:
        keyed.sdk.images.create_variation(image=("in.png", image_bytes((64, 64)), "image/png"))
    assert refused.value.body["code"] == "unsupported_operation"
    assert "/v1/images/edits" in refused.value.body["message"] and "/image-to-image" in refused.value.body["message"]


# ------------------------------------------------------------------------------------------ streams


def test_stream_ends_with_the_completed_images_for_generations_and_edits(keyed):
    events = list(
        keyed.sdk.images.generate(
            prompt="streamed", size="256x256", n=2, stream=True, partial_images=2, extra_body=FAST
        )
    )
    partial = [e for e in events if e.type == "image_generation.partial_image"]
    completed = [e for e in events if e.type == "image_generation.completed"]
    # Partial images are "up to" partial_images: previews of the latents, once the registry publishes them.
    assert len(partial) <= 2 and [e.partial_image_index for e in partial] == list(range(len(partial)))
    assert len(completed) == 2 and events[-1].type == "image_generation.completed"
    assert all(decoded(e.b64_json).size == (256, 256) and e.size == "256x256" for e in completed)

    edits = list(
        keyed.sdk.images.edit(
            model="qwen-image-edit",
            image=("in.png", image_bytes((96, 64)), "image/png"),
            prompt="把背景换成蓝色",
            size="256x256",
            stream=True,
            partial_images=1,
            extra_body=FAST,
        )
    )
    assert edits[-1].type == "image_edit.completed" and decoded(edits[-1].b64_json).size == (256, 256)


def test_a_stream_carries_partial_images_at_the_requested_size(keyed):
    # Decoded by the VAE on the replica at a third and two thirds of the run, as OpenAI's are full-size.
    events = list(
        keyed.sdk.images.generate(
            prompt="a partial fox",
            size="384x256",
            stream=True,
            partial_images=2,
            output_format="webp",
            extra_body={"num_inference_steps": 20},
        )
    )
    partial = [e for e in events if e.type == "image_generation.partial_image"]
    assert [e.partial_image_index for e in partial] == [0, 1]
    for event in partial:
        image = decoded(event.b64_json)
        assert image.size == (384, 256) and event.size == "384x256" and image.format == "WEBP"
    assert events[-1].type == "image_generation.completed"
    assert decoded(events[-1].b64_json).size == (384, 256)
    assert len({e.b64_json for e in partial}) == 2  # two moments of the run, not one picture twice

    edits = list(
        keyed.sdk.images.edit(
            image=("in.png", image_bytes((96, 64)), "image/png"),
            prompt="a partial edit",
            size="256x384",
            stream=True,
            partial_images=1,
            extra_body={"num_inference_steps": 20},
        )
    )
    partial = [e for e in edits if e.type == "image_edit.partial_image"]
    assert len(partial) == 1 and decoded(partial[0].b64_json).size == (256, 384)


def test_quality_low_is_fast_mode_and_extras_reach_the_native_options(client, keyed):
    response = keyed.sdk.images.with_raw_response.generate(prompt="quick", size="256x256", quality="low")
    task_id = response.headers["x-task-id"]
    parameters = client.get(f"/tasks/history/{task_id}", headers=keyed.headers).json()["parameters"]
    assert (parameters["speed"], parameters["num_inference_steps"], parameters["true_cfg_scale"]) == ("fast", 4, 1.0)
    with pytest.raises(openai.BadRequestError) as refused:
        keyed.sdk.images.generate(prompt="x", size="256x256", extra_body={"loras": ["nobody:0.5"]})
    assert refused.value.body["param"] == "loras"
    with pytest.raises(openai.BadRequestError) as refused:
        keyed.sdk.images.generate(prompt="x", size="256x256", extra_body={"webhook_url": "http://127.0.0.1:9/hook"})
    assert refused.value.body["param"] == "webhook_url"


# ------------------------------------------------------------------------------------------ errors


def test_every_error_class_of_the_sdk(client, base_url, keyed, admin_headers):
    with pytest.raises(openai.BadRequestError) as bad_size:
        keyed.sdk.images.generate(prompt="x", size="100x100")
    assert bad_size.value.param == "size" and bad_size.value.code == "invalid_value"
    with pytest.raises(openai.BadRequestError) as transparent:
        keyed.sdk.images.generate(prompt="x", background="transparent")
    assert transparent.value.param == "background"
    with pytest.raises(openai.BadRequestError) as too_many:
        keyed.sdk.images.generate(prompt="x", n=5)
    assert too_many.value.param == "n"
    with pytest.raises(openai.NotFoundError) as unknown:
        keyed.sdk.images.generate(prompt="x", model="midjourney-v6")
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        sdk(base_url, "qis-not-a-real-key").images.generate(prompt="x")
    client.put(f"/auth/users/{keyed.id}/quota", headers=admin_headers, json={"daily_limit": 1})
    with pytest.raises(openai.RateLimitError) as quota:
        keyed.sdk.images.generate(prompt="x", n=2, size="256x256", extra_body=FAST)
    assert quota.value.response.headers["x-should-retry"] == "false"
    assert client.get("/tasks/history/me", headers=keyed.headers).json()["total"] == 0


def test_error_bodies_over_plain_http(client, keyed):
    headers = {"Authorization": f"Bearer {keyed.key}"}
    missing = client.post("/v1/images/generations", json={"prompt": "x"})
    assert openai_error(missing, 401)["code"] == "invalid_api_key"
    assert missing.headers["x-should-retry"] == "false" and missing.headers["www-authenticate"] == "Bearer"
    not_json = client.post(
        "/v1/images/generations", headers={**headers, "Content-Type": "application/json"}, content=b"{nope"
    )
    openai_error(not_json, 400)
    assert (
        openai_error(client.post("/v1/images/generations", headers=headers, json={}), 400, "prompt")["code"]
        == "missing_required_parameter"
    )
    openai_error(client.post("/v1/images/generations", headers=headers, json={"prompt": "x", "n": 9}), 400, "n")
    openai_error(
        client.post("/v1/images/generations", headers=headers, json={"prompt": "x", "response_format": "gif"}),
        400,
        "response_format",
    )
    no_image = client.post("/v1/images/edits", headers=headers, data={"prompt": "x"})
    openai_error(no_image, 400, "image")
    three = [("image[]", (f"{n}.png", image_bytes(), "image/png")) for n in range(3)]
    openai_error(client.post("/v1/images/edits", headers=headers, data={"prompt": "x"}, files=three), 400, "image")
    masked = client.post(
        "/v1/images/edits",
        headers=headers,
        data={"prompt": "x"},
        files=[("image", ("a.png", image_bytes(), "image/png")), ("mask", ("m.png", image_bytes(), "image/png"))],
    )
    assert "marks nothing to repaint" in openai_error(masked, 400, "mask")["message"]  # opaque and dark
    broken = client.post(
        "/v1/images/edits",
        headers=headers,
        data={"prompt": "x"},
        files=[("image", ("a.png", b"not an image", "image/png"))],
    )
    openai_error(broken, 400, "image")
    assert openai_error(client.get("/v1/models/sd-3", headers=headers), 404, "model")["code"] == "model_not_found"
    chinese = client.post("/v1/images/generations", headers={"Accept-Language": "zh"}, json={"prompt": "x"})
    assert openai_error(chinese, 401)["message"] == "无效的认证凭据"


# ------------------------------------------------------------------------------------------ a second application


@pytest.fixture(scope="module")
def t2i_only(deploy_app, data_root) -> Iterator[str]:
    """Text-to-image only, on the sleep profile with slow steps, under a route prefix."""
    from ray import serve

    yield deploy_app(
        "oai",
        sleep_app_args(
            data_root,
            "oai",
            enabled_models="text_to_image",
            model_replicas=1,
            model_profile="faulty",  # the sleep profile, whose prompts can also ask for a slower step
            sleep_seconds_per_step=0.05,
            openai_model_aliases="",
        ),
    )
    serve.delete("oai", _blocking=False)  # not waited for, as in test_routing.py


def test_a_disabled_model_is_503_and_urls_carry_the_route_prefix(t2i_only):
    with httpx.Client(base_url=t2i_only, timeout=60) as http:
        token = http.post("/auth/login", json={"username": "admin", "password": "admin123"}).json()["access_token"]
    client = sdk(t2i_only, token, max_retries=0)
    assert [m.id for m in client.models.list()] == ["qwen-image"]  # and no OpenAI names: aliases are off here
    with pytest.raises(openai.NotFoundError) as no_alias:
        client.images.generate(model="gpt-image-1", prompt="x", size="256x256", extra_body=FAST)
    assert no_alias.value.code == "model_not_found"
    with pytest.raises(openai.InternalServerError) as unavailable:
        client.images.edit(image=("in.png", image_bytes(), "image/png"), prompt="x")
    assert unavailable.value.status_code == 503 and "x-should-retry" not in unavailable.value.response.headers
    url = client.images.generate(prompt="x", size="256x256", response_format="url", extra_body=FAST).data[0].url
    assert url.startswith(t2i_only + "/v1/images/files/")
    assert httpx.get(url, timeout=30).headers["content-type"] == "image/png"


def test_a_streamed_task_can_be_cancelled_while_it_runs(t2i_only):
    with httpx.Client(base_url=t2i_only, timeout=60) as http:
        token = http.post("/auth/login", json={"username": "admin", "password": "admin123"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        # 100 steps of 0.25 s: still running when the cancel comes, however slow the machine.
        body = {"prompt": "__fault_slow_step_0.2__ slow", "size": "256x256", "stream": True, "num_inference_steps": 100}
        with http.stream("POST", "/v1/images/generations", headers=headers, json=body) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            task_id = stream.headers["x-task-id"]
            wait_status(http, headers, task_id, statuses={"running"})
            assert http.delete(f"/tasks/{task_id}", headers=headers).status_code == 200
            text = stream.read().decode()
        assert "event: error" in text and '"code":"conflict"' in text
        assert http.get(f"/tasks/{task_id}", headers=headers).json()["status"] == "cancelled"


def test_a_call_outlasting_the_sdk_timeout_answers_first_and_is_not_retried(t2i_only):
    with httpx.Client(base_url=t2i_only, timeout=60) as http:
        token = http.post("/auth/login", json={"username": "admin", "password": "admin123"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        before = http.get("/tasks/history/me", headers=headers).json()["total"]
        # 100 steps of 0.12 s (a slowed step) against a 10 s read timeout, with the SDK's default two
        # retries. The service answers 2 s before the SDK gives up (20% of its timeout): room for a slow
        # machine's round trip.
        with pytest.raises(openai.APIStatusError) as slow:
            sdk(t2i_only, token, timeout=10.0).images.generate(
                prompt="__fault_slow_step_0.07__ slow", size="256x256", extra_body={"num_inference_steps": 100}
            )
        assert slow.value.status_code == 408 and slow.value.response.headers["x-should-retry"] == "false"
        task_id = slow.value.response.headers["x-task-id"]
        assert http.get("/tasks/history/me", headers=headers).json()["total"] == before + 1
        assert wait_status(http, headers, task_id)["status"] == "completed"

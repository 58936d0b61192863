"""The ingress on the unified Qwen-Image 2.1 profile: redraws and masks refused naming the profile,
up to four references on the edit routes, the model's own steps and CFG when none are given, LoRA
adapters of its own family only (real app on ``tiny21`` settings, stand-in registry and models, no Ray)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from models.profiles import PAIR_ADAPTER_BASE, QWEN21_ADAPTER_BASE, QWEN21_DEFAULT_STEPS, QWEN21_MAX_REFERENCES
from serving.api import build_service_state, create_app
from serving.settings import SHARED_DEPLOYMENT, load_settings
from tests.conftest import ADDRESS_LIMITS
from tests.inprocess.conftest import APP_NAME, StandInRegistry, login, make_client, png, register
from tests.inprocess.test_loras import register_upload

pytestmark = pytest.mark.unit

EN = {"Accept-Language": "en"}


def shared_model_running(app_name: str) -> dict:
    """Stand-in for Serve's controller: the unified profile's one deployment, running."""
    return {"gpu_count": 1, "deployments": {SHARED_DEPLOYMENT: {"status": "HEALTHY", "running_replicas": 1}}}


def make_client21(tmp_path) -> TestClient:
    """The app on ``tiny21`` settings over the data in ``tmp_path`` (a pair's client may share it)."""
    settings = load_settings(
        {
            "data_dir": str(tmp_path),
            "password_hash_profile": "cheapest",
            "cleanup_interval_seconds": 0,
            "model_profile": "tiny21",
            **ADDRESS_LIMITS,
        }
    )
    registry = StandInRegistry(settings.public_dict())
    state = build_service_state(settings, registry, APP_NAME, read_status=shared_model_running)
    return TestClient(create_app(state))


@pytest.fixture
def client21(tmp_path) -> Iterator[TestClient]:
    with make_client21(tmp_path) as c:
        yield c


@pytest.fixture
def carol(client21) -> dict[str, str]:
    return register(client21, "carol")


def images(count: int, field: str = "images") -> list:
    return [(field, (f"in{n}.png", png((64, 48)), "image/png")) for n in range(count)]


def parameters_of(client, headers, response) -> dict:
    assert response.status_code == 202, response.text
    return client.get(f"/tasks/history/{response.json()['task_id']}", headers=headers).json()["parameters"]


def test_redraws_and_masks_are_a_400_naming_the_profile(client21, carol):
    headers = {**carol, **EN}
    redraw = client21.post("/image-to-image", headers=headers, data={"prompt": "a cat"}, files=images(1, "image"))
    masked = client21.post(
        "/image-edit",
        headers=headers,
        data={"prompt": "a cat"},
        files=[*images(1), ("mask", ("m.png", png((64, 48)), "image/png"))],
    )
    strength = client21.post(
        "/image-edit", headers=headers, data={"prompt": "a cat", "strength": "0.5"}, files=images(1)
    )
    v1_mask = client21.post(
        "/v1/images/edits",
        headers=headers,
        data={"prompt": "a cat"},
        files=[*images(1, "image"), ("mask", ("m.png", png((64, 48)), "image/png"))],
    )
    for response in (redraw, masked, strength):
        assert response.status_code == 400, response.text
        assert "tiny21 profile (Qwen-Image 2.1)" in response.json()["detail"]
    assert v1_mask.status_code == 400 and v1_mask.json()["error"]["param"] == "mask"
    assert "tiny21 profile" in v1_mask.json()["error"]["message"]
    assert client21.get("/tasks/history/me", headers=carol).json()["total"] == 0  # nothing was created


def test_an_edit_takes_up_to_the_models_references_on_both_edit_routes(client21, carol):
    native = parameters_of(
        client21,
        carol,
        client21.post("/image-edit", headers=carol, data={"prompt": "a cat"}, files=images(QWEN21_MAX_REFERENCES)),
    )
    assert native["input_count"] == QWEN21_MAX_REFERENCES
    v1 = client21.post(
        "/v1/images/edits",
        headers=carol,
        data={"prompt": "a cat", "stream": "true"},
        files=images(QWEN21_MAX_REFERENCES, "image[]"),
    )
    assert v1.status_code == 200, v1.text
    for route, field in (("/image-edit", "images"), ("/v1/images/edits", "image[]")):
        over = client21.post(
            route, headers={**carol, **EN}, data={"prompt": "a cat"}, files=images(QWEN21_MAX_REFERENCES + 1, field)
        )
        assert over.status_code == 400, over.text
        said = over.json().get("detail") or over.json()["error"]["message"]
        assert f"takes 1-{QWEN21_MAX_REFERENCES} reference images" in said and "tiny21" in said


def test_the_pair_keeps_the_contracts_two_images(client, alice):
    response = client.post("/image-edit", headers={**alice, **EN}, data={"prompt": "a cat"}, files=images(3))
    assert response.status_code == 400 and "at most 2" in response.json()["detail"]


def test_steps_and_cfg_left_out_are_the_models_own(client21, carol):
    t2i = parameters_of(client21, carol, client21.post("/text-to-image", headers=carol, data={"prompt": "a cat"}))
    edit = parameters_of(
        client21, carol, client21.post("/image-edit", headers=carol, data={"prompt": "a cat"}, files=images(1))
    )
    for given in (t2i, edit):
        assert given["num_inference_steps"] == QWEN21_DEFAULT_STEPS and given["true_cfg_scale"] == 1.0
    chosen = parameters_of(
        client21,
        carol,
        client21.post(
            "/text-to-image",
            headers=carol,
            data={"prompt": "a cat", "num_inference_steps": "24", "true_cfg_scale": "3"},
        ),
    )
    assert chosen["num_inference_steps"] == 24 and chosen["true_cfg_scale"] == 3.0


def test_the_pair_keeps_the_contracts_defaults(client, alice):
    t2i = parameters_of(client, alice, client.post("/text-to-image", headers=alice, data={"prompt": "a cat"}))
    assert t2i["num_inference_steps"] == 50 and t2i["true_cfg_scale"] == 4.0


@pytest.fixture(scope="module")
def lora_bytes(tmp_path_factory) -> bytes:
    from models.tiny_adapter import build_tiny_lora

    with open(build_tiny_lora("text_to_image", str(tmp_path_factory.mktemp("lora")), seed=5), "rb") as file:
        return file.read()


def t2i_with(client, headers, loras: str):
    return client.post(
        "/text-to-image",
        headers={**headers, **EN},
        data={"prompt": "a cat", "num_inference_steps": "20", "loras": loras},
    )


def test_the_catalogue_records_each_adapters_base_and_refuses_the_other_familys(tmp_path, lora_bytes):
    with make_client(tmp_path) as pair:  # the 2512/2511 pair's service, on the same database
        admin = login(pair, "admin", "admin123")
        assert register_upload(pair, admin, "ink", lora_bytes).json()["base"] == PAIR_ADAPTER_BASE
    with make_client21(tmp_path) as client21:
        admin = {**login(client21, "admin", "admin123"), **EN}
        glow = register_upload(client21, admin, "glow", lora_bytes)
        assert glow.status_code == 201 and glow.json()["base"] == QWEN21_ADAPTER_BASE
        mismatch = register_upload(client21, admin, "ink2", lora_bytes, base=PAIR_ADAPTER_BASE)
        assert mismatch.status_code == 400 and "runs qwen-image-2.1 (the tiny21 profile)" in mismatch.json()["detail"]
        unknown = register_upload(client21, admin, "ink3", lora_bytes, base="sdxl")
        assert unknown.status_code == 400 and "base" in unknown.json()["detail"]
        assert t2i_with(client21, admin, "glow:0.5").status_code == 202
        # One pipeline serves both kinds: an adapter registered for text_to_image applies to edits too
        edit = client21.post("/image-edit", headers=admin, data={"prompt": "a cat", "loras": "glow"}, files=images(1))
        assert edit.status_code == 202, edit.text
        turbo = client21.post(
            "/text-to-image",
            headers=admin,
            data={"prompt": "a cat", "num_inference_steps": "20", "loras": "glow", "speed": "fast"},
        )
        assert turbo.status_code == 400 and "Turbo) takes no LoRA" in turbo.json()["detail"]
        refused = t2i_with(client21, admin, "ink")
        assert refused.status_code == 400 and "ink was trained for qwen-image;" in refused.json()["detail"]
    with make_client(tmp_path) as pair:
        admin = login(pair, "admin", "admin123")
        refused = t2i_with(pair, admin, "glow")
        assert refused.status_code == 400 and "glow was trained for qwen-image-2.1" in refused.json()["detail"]
        assert t2i_with(pair, admin, "ink").status_code == 202

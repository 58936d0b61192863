"""The LoRA catalogue and the generation routes' ``loras``/``speed`` options, through the real app.

Uploaded adapters are real ``.safetensors`` LoRA files for the tiny transformer (built in code);
the registry's logic runs in this process and resolves each task's adapters from the catalogue.
"""

from __future__ import annotations

import io
import struct

import pytest
from safetensors.torch import save

from models.tiny_adapter import build_tiny_lora
from tests.inprocess.conftest import login, make_client, png

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def lora_bytes(tmp_path_factory) -> bytes:
    path = build_tiny_lora("text_to_image", str(tmp_path_factory.mktemp("lora")), seed=5)
    with open(path, "rb") as file:
        return file.read()


def register_upload(client, headers, name: str, data: bytes, model: str = "text_to_image", **fields):
    return client.post(
        "/admin/loras",
        headers=headers,
        data={"name": name, "model": model, **{k: str(v) for k, v in fields.items()}},
        files={"file": (f"{name}.safetensors", io.BytesIO(data), "application/octet-stream")},
    )


def submit(client, headers, path: str = "/text-to-image", files=None, **fields):
    data = {"prompt": "a cat", "num_inference_steps": "20", **{k: str(v) for k, v in fields.items()}}
    return client.post(path, headers=headers, data=data, files=files)


def test_admin_registers_an_uploaded_adapter_and_users_see_it_without_its_source(client, admin, alice, lora_bytes):
    response = register_upload(
        client, admin, "ink", lora_bytes, default_scale=0.8, description="ink wash", trigger_words="ink, wash"
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["source_type"] == "local" and created["source"].startswith("uploads/ink-")
    assert created["size_bytes"] == len(lora_bytes) and len(created["sha256"]) == 64
    listed = client.get("/loras", headers=alice).json()
    assert listed == [
        {
            "name": "ink",
            "model": "text_to_image",
            "base": "qwen-image",
            "default_scale": 0.8,
            "description": "ink wash",
            "trigger_words": ["ink", "wash"],
            "created_at": created["created_at"],
        }
    ]
    assert client.get("/loras?model=image_edit", headers=alice).json() == []
    assert client.get("/admin/loras", headers=admin).json()[0]["source"] == created["source"]


def test_only_admins_manage_the_catalogue(client, alice, lora_bytes):
    assert register_upload(client, alice, "ink", lora_bytes).status_code == 403
    assert client.get("/admin/loras", headers=alice).status_code == 403
    assert client.delete("/admin/loras/ink", headers=alice).status_code == 403


@pytest.mark.parametrize(
    "data, message",
    [
        (b"PK\x03\x04 a zip, not weights", "LoRA 文件 bogus.safetensors 无效：不是有效的 .safetensors 文件"),
        (struct.pack("<Q", 2) + b"{}", "文件中没有任何张量"),
        (save({"transformer.proj.weight": __import__("torch").zeros(2, 2)}), "文件中没有 LoRA 权重"),
    ],
)
def test_uploads_that_are_not_lora_safetensors_are_refused_and_nothing_is_kept(client, admin, tmp_path, data, message):
    response = register_upload(client, admin, "bogus", data)
    assert response.status_code == 400 and message in response.json()["detail"], response.text
    assert client.get("/admin/loras", headers=admin).json() == []
    assert list((tmp_path / "loras" / "uploads").iterdir()) == []


def test_an_upload_over_the_limit_is_413(tmp_path, lora_bytes):
    with make_client(tmp_path, lora_max_upload_mb=1) as client:
        admin = {
            "Authorization": "Bearer "
            + client.post("/auth/login", json={"username": "admin", "password": "admin123"}).json()["access_token"]
        }
        response = register_upload(client, admin, "big", lora_bytes + b"\0" * (2 * 1024 * 1024))
        assert response.status_code == 413


def test_sources_are_checked_names_unique_and_paths_stay_inside_the_lora_dir(client, admin, lora_bytes, tmp_path):
    (tmp_path / "loras" / "styles").mkdir(parents=True)
    (tmp_path / "loras" / "styles" / "clay.safetensors").write_bytes(lora_bytes)
    (tmp_path / "outside.safetensors").write_bytes(lora_bytes)
    local = {"name": "clay", "model": "text_to_image", "source": "local:styles/clay.safetensors"}
    assert client.post("/admin/loras", headers=admin, data=local).status_code == 201
    assert client.post("/admin/loras", headers=admin, data=local).status_code == 409
    for source in (
        "local:../outside.safetensors",
        f"local:{tmp_path}/outside.safetensors",
        "local:missing.safetensors",
        "local:styles/clay\x00.safetensors",
        "ftp://example.com/x",
        "hub:not a repo",
    ):
        response = client.post("/admin/loras", headers=admin, data={**local, "name": "other", "source": source})
        assert response.status_code == 400, source
    hub = {
        "name": "lightning-2511",
        "model": "image_edit",
        "source": "hub:lightx2v/Qwen-Image-Lightning",
        "weight_name": "Qwen-Image-Lightning-4steps-V1.0.safetensors",
    }
    assert client.post("/admin/loras", headers=admin, data=hub).status_code == 201
    assert client.post("/admin/loras", headers=admin, data={**hub, "name": "Bad Name"}).status_code == 400
    # Longer than the catalogue's column (PostgreSQL would refuse the row with a server error).
    assert (
        client.post(
            "/admin/loras", headers=admin, data={**hub, "name": "long", "source": "hub:o/" + "r" * 600}
        ).status_code
        == 400
    )
    # The fast mode's adapter is held under this name in the replicas: a catalogue entry may not share it.
    reserved = client.post("/admin/loras", headers=admin, data={**hub, "name": "lightning"})
    assert reserved.status_code == 400 and "lightning" in reserved.json()["detail"]
    assert client.post("/admin/loras", headers=admin, data={**hub, "name": "x", "model": "video"}).status_code == 400


def test_generation_records_its_adapters_and_the_registry_resolves_them(client, admin, alice, lora_bytes, tmp_path):
    assert register_upload(client, admin, "ink", lora_bytes, default_scale=0.8).status_code == 201
    response = submit(client, alice, loras="ink")
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    record = client.get(f"/tasks/history/{task_id}", headers=alice).json()
    assert record["parameters"]["loras"] == [{"name": "ink", "scale": 0.8}]  # the adapter's default scale
    core = client.app.state.service.registry.core
    [request] = core.tasks[task_id].requests
    [ref] = request.adapters
    assert (ref.name, ref.scale) == ("ink", 0.8)
    assert (tmp_path / "loras" / "uploads" / ref.weight_name).is_file() and ref.path.endswith("uploads")


@pytest.mark.parametrize(
    "loras, message",
    [
        ("nobody:1", "参数 loras 无效：未知的 LoRA nobody"),
        ("ink:9", "LoRA ink 的权重必须在 -2.0 到 2.0 之间，收到 9.0"),
        ("ink,ink", "LoRA ink 出现了两次"),
        ("a,b,c,d", "每个请求最多 3 个 LoRA，收到 4 个"),
    ],
)
def test_bad_adapter_lists_are_400_naming_the_problem(client, admin, alice, lora_bytes, loras, message):
    assert register_upload(client, admin, "ink", lora_bytes).status_code == 201
    response = submit(client, alice, loras=loras)
    assert response.status_code == 400 and message in response.json()["detail"], response.text


def test_an_adapter_of_the_other_model_is_400(client, admin, alice, lora_bytes):
    assert register_upload(client, admin, "ink", lora_bytes).status_code == 201
    response = submit(client, alice, "/image-edit", files={"images": ("a.png", png(), "image/png")}, loras="ink")
    assert response.status_code == 400 and "text_to_image" in response.json()["detail"]


def test_fast_mode_runs_the_fast_steps_without_cfg(client, alice):
    response = submit(client, alice, speed="fast", true_cfg_scale=5)
    assert response.status_code == 202, response.text
    parameters = client.get(f"/tasks/history/{response.json()['task_id']}", headers=alice).json()["parameters"]
    assert (parameters["speed"], parameters["num_inference_steps"], parameters["true_cfg_scale"]) == ("fast", 4, 1.0)
    assert submit(client, alice, speed="turbo").status_code == 400


def test_a_deleted_adapter_can_no_longer_be_named(client, admin, alice, lora_bytes, tmp_path):
    assert register_upload(client, admin, "ink", lora_bytes).status_code == 201
    assert client.delete("/admin/loras/ink", headers=admin).status_code == 204
    assert client.delete("/admin/loras/ink", headers=admin).status_code == 404
    assert list((tmp_path / "loras" / "uploads").iterdir()) == []  # its uploaded file went with it
    assert submit(client, alice, loras="ink").status_code == 400


def test_deleting_an_upload_keeps_its_file_while_another_entry_reads_it(client, admin, alice, lora_bytes, tmp_path):
    created = register_upload(client, admin, "ink", lora_bytes).json()
    again = {"name": "ink-again", "model": "text_to_image", "source": f"local:{created['source']}"}
    assert client.post("/admin/loras", headers=admin, data=again).status_code == 201
    assert client.delete("/admin/loras/ink", headers=admin).status_code == 204
    stored = tmp_path / "loras" / created["source"]
    assert stored.is_file()  # "ink-again" still reads it
    assert submit(client, alice, loras="ink-again").status_code == 202
    assert client.delete("/admin/loras/ink-again", headers=admin).status_code == 204
    assert not stored.exists()  # an uploaded file goes with the last entry reading it


def test_a_refused_registration_never_removes_a_file_an_entry_reads(client, admin, alice, lora_bytes, tmp_path):
    created = register_upload(client, admin, "ink", lora_bytes).json()
    stored = tmp_path / "loras" / created["source"]
    # The same bytes under the same name again: refused, and the existing entry's file stays.
    assert register_upload(client, admin, "ink", lora_bytes).status_code == 409
    assert stored.is_file()
    assert submit(client, alice, loras="ink").status_code == 202
    # Its file kept for a `local:` entry, the first entry deleted and uploaded again: the file is
    # not this upload's to remove when the upload is refused.
    again = {"name": "ink-again", "model": "text_to_image", "source": f"local:{created['source']}"}
    assert client.post("/admin/loras", headers=admin, data=again).status_code == 201
    assert client.delete("/admin/loras/ink", headers=admin).status_code == 204
    assert register_upload(client, admin, "ink", lora_bytes).status_code == 201
    assert stored.is_file()
    assert client.delete("/admin/loras/ink", headers=admin).status_code == 204
    assert stored.is_file() and submit(client, alice, loras="ink-again").status_code == 202


def lora_of_mb(megabytes: float) -> bytes:
    """A valid LoRA .safetensors file of about ``megabytes`` (its size is all these tests look at)."""
    import torch

    columns = int(megabytes * 2**20 / 4 / 4)
    return save({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, columns)})


def test_adapters_a_replica_cannot_hold_at_once_are_refused_at_submission(tmp_path):
    with make_client(tmp_path, adapter_cache_size=2, adapter_cache_mb=4) as client:
        admin = login(client, "admin", "admin123")
        for name in ("ink", "neon", "clay"):
            assert register_upload(client, admin, name, lora_of_mb(1.5)).status_code == 201, name
        assert submit(client, admin, loras="ink,neon").status_code == 202  # 3 MB in 2 places: they fit
        assert submit(client, admin, loras="ink", speed="fast").status_code == 202  # Lightning has a place of its own
        too_many = submit(client, admin, loras="ink,neon,clay")
        assert too_many.status_code == 400 and "ADAPTER_CACHE_SIZE" in too_many.json()["detail"]
        assert register_upload(client, admin, "wide", lora_of_mb(2.5)).status_code == 201
        too_big = submit(client, admin, loras="ink,wide")  # 4 MB and more
        assert too_big.status_code == 400 and "ADAPTER_CACHE_MB" in too_big.json()["detail"]
        # A file larger than the whole cache could never be loaded: refused when registered, not kept.
        huge = register_upload(client, admin, "huge", lora_of_mb(4.5))
        assert huge.status_code == 400 and "ADAPTER_CACHE_MB" in huge.json()["detail"]
        assert sorted(path.name.split("-")[0] for path in (tmp_path / "loras" / "uploads").iterdir()) == [
            "clay",
            "ink",
            "neon",
            "wide",
        ]


def test_with_compilation_an_adapter_of_a_rank_the_slots_cannot_take_is_refused_when_registered(tmp_path, lora_bytes):
    with make_client(tmp_path, compile_transformer=True, max_adapter_rank=2) as client:
        admin = login(client, "admin", "admin123")
        refused = register_upload(client, admin, "ink", lora_bytes)  # rank 4
        assert refused.status_code == 400 and "MAX_ADAPTER_RANK" in refused.json()["detail"]
        (tmp_path / "loras" / "styles").mkdir(parents=True)
        (tmp_path / "loras" / "styles" / "ink.safetensors").write_bytes(lora_bytes)
        local = {"name": "ink", "model": "text_to_image", "source": "local:styles/ink.safetensors"}
        assert client.post("/admin/loras", headers=admin, data=local).status_code == 400
    with make_client(tmp_path, compile_transformer=True, max_adapter_rank=4) as client:
        assert register_upload(client, login(client, "admin", "admin123"), "ink", lora_bytes).status_code == 201

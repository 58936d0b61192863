"""Generation endpoints (contract § 2–4) with real tiny pipelines, async and sync."""

from __future__ import annotations

import pytest

from models.aspect import ASPECT_RATIOS
from tests.api.helpers import image_bytes, png_size, submit_t2i, wait_status, zip_pngs


def test_async_text_to_image_answers_202_then_the_png(client, user):
    response = client.post(
        "/text-to-image", headers=user.headers, data={"prompt": "一只可爱的猫", "num_inference_steps": "20"}
    )
    assert response.status_code == 202
    body = response.json()
    assert body["message"] == "任务已提交"
    task_id = body["task_id"]
    assert body["status_url"] == f"/tasks/{task_id}" and body["result_url"] == f"/tasks/{task_id}/result"
    assert set(body["queue_info"]) == {"pending_tasks", "running_tasks"}
    result = client.get(f"/tasks/{task_id}/result", headers=user.headers, params={"wait": "true"})
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert png_size(result.content) == (1024, 1024)
    status = client.get(f"/tasks/{task_id}", headers=user.headers).json()
    assert status["status"] == "completed" and status["error"] is None
    assert status["progress"] == {"current_step": 20, "total_steps": 20, "percent": 100.0}
    assert isinstance(status["seed"], int) and status["seed"] >= 0
    for field in (
        "created_at",
        "started_at",
        "completed_at",
        "position_in_queue",
        "wait_time_seconds",
        "execution_time_seconds",
    ):
        assert field in status


@pytest.mark.parametrize("ratio", ["16:9", "3:4"])
def test_sync_text_to_image_returns_the_png_of_the_ratio_size(client, user, ratio):
    response = client.post(
        "/text-to-image",
        headers=user.headers,
        data={
            "prompt": "山水画",
            "aspect_ratio": ratio,
            "num_inference_steps": "20",
            "async_mode": "false",
            "seed": "7",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert png_size(response.content) == ASPECT_RATIOS[ratio]
    task_id = response.headers["x-task-id"]
    record = client.get(f"/tasks/history/{task_id}", headers=user.headers).json()
    assert record["status"] == "completed" and record["parameters"]["aspect_ratio"] == ratio
    assert record["seed"] == 7 and response.headers["x-seed"] == "7"
    # The pipeline's own time, measured in the replica: part of the task's run, not all of it.
    assert 0 < float(response.headers["x-generation-seconds"]) < record["execution_time"]


def test_sync_text_to_image_with_three_images_returns_a_zip(client, user):
    response = client.post(
        "/text-to-image",
        headers=user.headers,
        files={
            "prompt": (None, "a red fox"),
            "num_images": (None, "3"),
            "aspect_ratio": (None, "9:16"),
            "num_inference_steps": (None, "20"),
            "async_mode": (None, "false"),
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    images = zip_pngs(response.content)
    assert len(images) == 3
    assert all(png_size(png) == (928, 1664) for png in images)
    assert len(set(images)) == 3


def test_same_seed_gives_the_same_image_through_the_api(client, user):
    def run():
        return client.post(
            "/text-to-image",
            headers=user.headers,
            data={"prompt": "seeded", "seed": "1234", "num_inference_steps": "20", "async_mode": "false"},
        ).content

    assert run() == run()


def test_image_edit_with_one_image_returns_a_png(client, user):
    response = client.post(
        "/image-edit",
        headers=user.headers,
        files=[("images", ("in.png", image_bytes((96, 64)), "image/png"))],
        data={"prompt": "把背景换成蓝色", "num_inference_steps": "20", "async_mode": "false"},
    )
    assert response.status_code == 200, response.text
    width, height = png_size(response.content)
    assert abs(width / height - 96 / 64) < 0.1


def test_image_edit_with_two_images_composes_them(client, user):
    response = client.post(
        "/image-edit",
        headers=user.headers,
        files=[
            ("images", ("a.jpg", image_bytes((64, 64), fmt="JPEG"), "image/jpeg")),
            ("images", ("b.webp", image_bytes((64, 64), fmt="WEBP"), "image/webp")),
        ],
        data={"prompt": "合成两张图", "num_inference_steps": "20"},
    )
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    result = client.get(f"/tasks/{task_id}/result", headers=user.headers, params={"wait": "true", "timeout": "120"})
    assert result.status_code == 200 and png_size(result.content)
    record = client.get(f"/tasks/history/{task_id}", headers=user.headers).json()
    assert record["task_type"] == "image_edit" and record["parameters"]["input_count"] == 2


def test_batch_edit_runs_one_task_with_one_image_per_prompt(client, user):
    response = client.post(
        "/image-edit/batch",
        headers=user.headers,
        files={"image": ("in.png", image_bytes(), "image/png")},
        data={"prompts": "变成冬天|变成夏天|变成夜晚", "num_inference_steps": "20"},
    )
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    final = wait_status(client, user.headers, task_id, timeout=180)
    assert final["status"] == "completed", final
    assert final["task_type"] == "batch_edit"
    assert final["progress"]["total_steps"] == 60
    result = client.get(f"/tasks/{task_id}/result", headers=user.headers)
    assert result.headers["content-type"] == "application/zip"
    assert len(zip_pngs(result.content)) == 3


def test_generation_requires_authentication(client):
    assert client.post("/text-to-image", data={"prompt": "x"}).status_code == 401


def _history_total(client, headers) -> int:
    return client.get("/tasks/history/me", headers=headers).json()["total"]


BAD_T2I = [
    ({}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x", "aspect_ratio": "5:4"}, "5:4"),
    ({"prompt": "x", "num_inference_steps": "19"}, "num_inference_steps"),
    ({"prompt": "x", "num_inference_steps": "101"}, "num_inference_steps"),
    ({"prompt": "x", "true_cfg_scale": "0.5"}, "true_cfg_scale"),
    ({"prompt": "x", "true_cfg_scale": "10.5"}, "true_cfg_scale"),
    ({"prompt": "x", "num_images": "0"}, "num_images"),
    ({"prompt": "x", "num_images": "5"}, "num_images"),
    ({"prompt": "x", "seed": "-2"}, "seed"),
    ({"prompt": "x", "seed": "abc"}, "seed"),
    ({"prompt": "x", "async_mode": "maybe"}, "async_mode"),
    ({"prompt": "x" * 2001}, "prompt"),
]


@pytest.mark.parametrize("fields,named", BAD_T2I)
def test_bad_text_to_image_input_is_400_naming_the_problem_and_creates_nothing(client, user, fields, named):
    before = _history_total(client, user.headers)
    response = client.post("/text-to-image", headers=user.headers, data=fields)
    assert response.status_code == 400, response.text
    assert named in response.json()["detail"]
    assert _history_total(client, user.headers) == before


BAD_EDIT = [
    ({"prompt": "x"}, [], "images"),
    ({}, [("images", ("a.png", image_bytes(), "image/png"))], "prompt"),
    ({"prompt": "x", "guidance_scale": "11"}, [("images", ("a.png", image_bytes(), "image/png"))], "guidance_scale"),
    (
        {"prompt": "x", "num_inference_steps": "10"},
        [("images", ("a.png", image_bytes(), "image/png"))],
        "num_inference_steps",
    ),
    ({"prompt": "x"}, [("images", ("a.png", image_bytes(), "image/png"))] * 3, "2"),
    ({"prompt": "x"}, [("images", ("empty.png", b"", "image/png"))], "为空"),
    ({"prompt": "x"}, [("images", ("t.png", image_bytes((200, 200))[:300], "image/png"))], "无法解析"),
    ({"prompt": "x"}, [("images", ("fake.png", b"<html>not an image</html>", "image/png"))], "无法解析"),
    ({"prompt": "x"}, [("images", ("a.gif", _gif := b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"))], "a.gif"),
    ({"prompt": "x"}, [("images", ("tiny.png", image_bytes((4, 4)), "image/png"))], "过小"),
]


@pytest.mark.parametrize("fields,files,named", BAD_EDIT)
def test_bad_image_edit_input_is_400_and_creates_nothing(client, user, fields, files, named):
    before = _history_total(client, user.headers)
    response = client.post("/image-edit", headers=user.headers, data=fields, files=files or None)
    assert response.status_code == 400, response.text
    assert named in response.json()["detail"]
    assert _history_total(client, user.headers) == before


def test_bad_batch_input_is_400(client, user):
    image = {"image": ("a.png", image_bytes(), "image/png")}
    too_many = client.post(
        "/image-edit/batch", headers=user.headers, files=image, data={"prompts": "|".join(f"p{i}" for i in range(11))}
    )
    assert too_many.status_code == 400 and "10" in too_many.json()["detail"]
    empty = client.post("/image-edit/batch", headers=user.headers, files=image, data={"prompts": " | | "})
    assert empty.status_code == 400
    two_files = client.post(
        "/image-edit/batch",
        headers=user.headers,
        data={"prompts": "a|b"},
        files=[("image", ("a.png", image_bytes(), "image/png"))] * 2,
    )
    assert two_files.status_code == 400


def test_declared_content_type_is_ignored_in_favour_of_the_bytes(faulty_client, faulty_user):
    # The ingress decides from the bytes; what the model does with them is not the question: /faulty's sleep steps.
    client, user = faulty_client, faulty_user
    png_as_text = client.post(
        "/image-edit",
        headers=user.headers,
        data={"prompt": "x", "num_inference_steps": "20"},
        files=[("images", ("a.txt", image_bytes(), "text/plain"))],
    )
    assert png_as_text.status_code == 202
    wait_status(client, user.headers, png_as_text.json()["task_id"])


def test_decompression_bomb_is_refused(client, user):
    import io
    import struct
    import zlib

    # A valid PNG header declaring 20000×20000 pixels with almost no data behind it.
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )
    response = client.post(
        "/image-edit",
        headers=user.headers,
        data={"prompt": "x"},
        files=[("images", ("bomb.png", io.BytesIO(bomb), "image/png"))],
    )
    assert response.status_code == 400
    assert "bomb.png" in response.json()["detail"]


def test_upload_over_20_mb_is_413_while_streaming(client, user):
    def body():
        yield b'--xyz\r\nContent-Disposition: form-data; name="images"; filename="big.png"\r\n'
        yield b"Content-Type: image/png\r\n\r\n"
        for _ in range(100):  # 100 MB, never buffered by the client either
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--xyz--\r\n"

    response = client.post(
        "/image-edit", headers={**user.headers, "Content-Type": "multipart/form-data; boundary=xyz"}, content=body()
    )
    assert response.status_code == 413
    assert "MB" in response.json()["detail"]


def test_declared_oversized_body_is_refused_before_reading(base_url, user):
    import socket
    from urllib.parse import urlsplit

    # A raw socket: the client announces 200 MB and sends almost nothing; the answer comes anyway.
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    head = (
        f"POST /image-edit HTTP/1.1\r\nHost: {host}\r\nAuthorization: {user.headers['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {200 * 1024 * 1024}\r\n\r\n--x"
    )
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head.encode())
        reply = sock.recv(4096).decode("utf-8", "replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]


def test_single_file_over_20_mb_is_413(client, user):
    big = b"\x89PNG" + b"\0" * (20 * 1024 * 1024 + 10)
    response = client.post(
        "/image-edit", headers=user.headers, data={"prompt": "x"}, files=[("images", ("big.png", big, "image/png"))]
    )
    assert response.status_code == 413


def test_text_to_image_accepts_the_seed_clients_form_fields(client, user):
    task_id = submit_t2i(client, user.headers, async_mode="true", negative_prompt="", seed=-1)
    assert wait_status(client, user.headers, task_id)["status"] == "completed"

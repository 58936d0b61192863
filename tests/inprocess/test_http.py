"""Auth, validation, uploads, history and errors through the real app in this process (no Ray).

Status codes and bodies are the contract's (``api-contract.md``); the task registry and the model
replicas are stand-ins (see ``conftest.py``), the database a real SQLite file.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.inprocess.conftest import HOLD, make_client, png, register

pytestmark = pytest.mark.unit


def submit(client, headers, **fields) -> str:
    data = {"prompt": "a cat", "num_inference_steps": "20", **{k: str(v) for k, v in fields.items()}}
    response = client.post("/text-to-image", headers=headers, data=data)
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def finished(client, headers, task_id: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        body = client.get(f"/tasks/{task_id}", headers=headers).json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.01)


# ------------------------------------------------------------------ auth


def test_routes_need_a_valid_token_and_admin_routes_an_admin(client, alice, admin):
    assert client.get("/auth/me").status_code == 401
    bad = client.get("/auth/me", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.json() == {"detail": "无效的认证凭据"}
    assert bad.headers["www-authenticate"] == "Bearer"
    assert client.get("/auth/me", headers=alice).json()["username"] == "alice"
    assert client.get("/auth/users", headers=alice).json() == {"detail": "需要管理员权限"}
    assert client.get("/auth/users", headers=admin).status_code == 200


def test_login_register_and_english_errors(client, alice):
    wrong = client.post("/auth/login", json={"username": "alice", "password": "nope-nope"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "用户名或密码错误"}
    taken = client.post("/auth/register", json={"username": "alice", "password": "another-pass"})
    assert taken.status_code == 400 and taken.json() == {"detail": "用户名已存在"}
    english = client.get("/auth/me", headers={"Accept-Language": "en"})
    assert english.json() == {"detail": "Invalid authentication credentials"}


def test_registration_closed_answers_403(tmp_path):
    with make_client(tmp_path, allow_registration=False) as client:
        response = client.post("/auth/register", json={"username": "carol", "password": "secret-pass-1"})
        assert response.status_code == 403 and response.json() == {"detail": "当前不允许用户注册"}


# ------------------------------------------------------------------ validation


def test_bad_generation_fields_are_400_with_a_detail(client, alice):
    missing = client.post("/text-to-image", headers=alice, data={"num_inference_steps": "20"})
    assert missing.status_code == 400 and missing.json() == {"detail": "缺少必填参数 prompt"}
    blank = client.post("/text-to-image", headers=alice, data={"prompt": "   "})
    assert blank.status_code == 400 and blank.json() == {"detail": "参数 prompt 不能为空"}
    steps = client.post("/text-to-image", headers=alice, data={"prompt": "x", "num_inference_steps": "5"})
    assert steps.status_code == 400 and steps.json() == {"detail": "参数 num_inference_steps 必须大于或等于 20"}
    ratio = client.post("/text-to-image", headers=alice, data={"prompt": "x", "aspect_ratio": "5:1"})
    assert ratio.status_code == 400 and ratio.json()["detail"].startswith("不支持的宽高比 5:1")
    seed = client.post("/text-to-image", headers=alice, data={"prompt": "x", "seed": str(2**32)})
    assert seed.status_code == 400
    english = client.post(
        "/text-to-image", headers={**alice, "Accept-Language": "en"}, data={"prompt": "x", "aspect_ratio": "5:1"}
    )
    assert english.json()["detail"].startswith("Unsupported aspect ratio 5:1")


def test_a_nul_in_any_prompt_is_400_naming_the_field(client, alice):
    negative = client.post("/text-to-image", headers=alice, data={"prompt": "x", "negative_prompt": "a\x00b"})
    assert negative.status_code == 400 and negative.json()["detail"].startswith("参数 negative_prompt 无效")
    batch = client.post(
        "/image-edit/batch",
        headers=alice,
        data={"prompts": "fine|a\x00b"},
        files={"image": ("a.png", png(), "image/png")},
    )
    assert batch.status_code == 400 and batch.json()["detail"].startswith("参数 prompts.1 无效")


def test_a_disabled_model_answers_503_with_the_contracts_message(tmp_path):
    with make_client(tmp_path, enabled_models="text_to_image") as client:
        headers = register(client, "dave")
        response = client.post(
            "/image-edit", headers=headers, data={"prompt": "x"}, files={"images": ("a.png", png(), "image/png")}
        )
        assert response.status_code == 503 and response.json() == {"detail": "图像编辑模型未加载"}
        health = client.get("/health").json()
        assert (health["models"]["text_to_image"], health["models"]["image_edit"]) == ("loaded", "disabled")
        assert health["text_to_image_model_loaded"] and not health["image_edit_model_loaded"]


def test_a_database_that_does_not_answer_is_probed_once_at_a_time_by_each_app(tmp_path, monkeypatch):
    """/health's probe of the database lives on each app's state: a second /health joins the probe
    still waiting instead of starting another, and another app starts its own. The database is made
    silent by a stand-in for the probe's query (a fake, to make the failure happen)."""
    from serving.routes import system

    answer = threading.Event()
    probed: list[object] = []

    def silent_select(engine) -> None:
        probed.append(engine)
        assert answer.wait(10)

    monkeypatch.setattr(system, "HEALTH_PING_TIMEOUT_S", 0.2)
    monkeypatch.setattr(system, "_select_one", silent_select)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()

    def probes_started(count: int) -> int:
        # A probe's thread may start after the /health that began it has timed out (a loaded host):
        # give it a moment to, then count (a probe too many would show here too).
        deadline = time.monotonic() + 5
        while len(probed) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(probed)

    with make_client(tmp_path / "a") as first, make_client(tmp_path / "b") as second:
        assert [first.get("/health").json()["database"] for _ in range(2)] == ["unreachable"] * 2
        assert probes_started(1) == 1
        assert second.get("/health").json()["database"] == "unreachable"
        assert probes_started(2) == 2 and probed[0] is not probed[1]
        answer.set()
        # The waiting probe now answers; a /health that still joins it in its last moments sees it end.
        deadline = time.monotonic() + 5
        while first.get("/health").json()["database"] != "up":
            assert time.monotonic() < deadline, "the database answered but /health still says unreachable"


# ------------------------------------------------------------------ uploads


def test_uploads_that_are_not_images_or_too_many_are_refused_and_nothing_is_stored(client, alice, tmp_path):
    html = client.post(
        "/image-edit", headers=alice, data={"prompt": "x"}, files={"images": ("a.png", b"<html>hi</html>", "image/png")}
    )
    assert html.status_code == 400 and "a.png" in html.json()["detail"]
    three = client.post(
        "/image-edit",
        headers=alice,
        data={"prompt": "x"},
        files=[("images", (f"{n}.png", png(), "image/png")) for n in range(3)],
    )
    assert three.status_code == 400 and three.json() == {"detail": "最多上传 2 张图片"}
    assert not (tmp_path / "store" / "inputs").exists()
    assert client.get("/tasks/history/me", headers=alice).json()["total"] == 0


def test_an_oversized_body_is_413_before_it_is_read(client, alice):
    response = client.post("/text-to-image", headers=alice, data={"prompt": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413 and "detail" in response.json()


def test_an_edit_with_a_real_image_completes_and_its_input_is_kept(client, alice, tmp_path):
    response = client.post(
        "/image-edit",
        headers=alice,
        data={"prompt": "make it blue", "num_inference_steps": "20"},
        files={"images": ("in.png", png(), "image/png")},
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert finished(client, alice, task_id)["status"] == "completed"
    assert (tmp_path / "store" / "inputs" / task_id / "0.png").exists()
    result = client.get(f"/tasks/{task_id}/result", headers=alice)
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"


# ------------------------------------------------------------------ tasks, history, errors


def test_sync_submission_answers_the_png_with_its_seed(client, alice):
    response = client.post(
        "/text-to-image",
        headers=alice,
        data={"prompt": "a cat", "num_inference_steps": "20", "seed": "42", "async_mode": "false"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-seed"] == "42" and response.content.startswith(b"\x89PNG")


def test_history_and_statistics_list_own_tasks_only(client, alice, bob, admin):
    mine = [submit(client, alice), submit(client, alice, prompt="fail now")]
    for task_id in mine:
        finished(client, alice, task_id)
    submit(client, bob)
    page = client.get("/tasks/history/me", headers=alice).json()
    assert page["total"] == 2 and [i["task_id"] for i in page["items"]] == mine[::-1]
    failed = client.get("/tasks/history/me", headers=alice, params={"status": "failed"}).json()["items"]
    assert [i["task_id"] for i in failed] == [mine[1]] and "stand-in" in failed[0]["error_message"]
    stats = client.get("/tasks/statistics/me", headers=alice).json()
    assert stats["total_tasks"] == 2 and stats["completed_tasks"] == 1 and stats["failed_tasks"] == 1
    assert client.get("/tasks/history/all", headers=admin).json()["total"] == 3
    assert client.get("/tasks/history/me", headers=alice, params={"page_size": 101}).status_code == 400


def test_someone_elses_task_is_404_and_an_unknown_one_too(client, alice, bob):
    task_id = submit(client, alice)
    for path in (f"/tasks/{task_id}", f"/tasks/{task_id}/result", f"/tasks/history/{task_id}"):
        response = client.get(path, headers=bob)
        assert response.status_code == 404 and response.json() == {"detail": "任务不存在"}, path
    assert client.delete(f"/tasks/{task_id}", headers=bob).status_code == 404
    assert client.get("/tasks/no-such-task", headers=alice).json() == {"detail": "任务不存在"}


def test_failed_and_cancelled_tasks_answer_their_errors(client, alice):
    failing = submit(client, alice, prompt="fail please")
    assert finished(client, alice, failing)["status"] == "failed"
    result = client.get(f"/tasks/{failing}/result", headers=alice)
    assert result.status_code == 500 and result.json()["detail"].startswith("任务执行失败: 生成失败")
    held = submit(client, alice, prompt=f"{HOLD} on")
    pending = client.get(f"/tasks/{held}/result", headers=alice)
    assert pending.status_code == 202 and pending.json()["status"] in ("pending", "running")
    cancelled = client.delete(f"/tasks/{held}", headers=alice)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.get(f"/tasks/{held}/result", headers=alice).json() == {"detail": "任务已取消"}
    again = client.delete(f"/tasks/{held}", headers=alice)
    assert again.status_code == 400 and again.json() == {"detail": "任务已结束，无法取消"}


def test_quota_refusal_is_429_and_writes_nothing(client, alice, admin):
    me = client.get("/auth/me", headers=alice).json()
    assert client.put(f"/auth/users/{me['id']}/quota", headers=admin, json={"daily_limit": 1}).status_code == 200
    finished(client, alice, submit(client, alice))
    refused = client.post("/text-to-image", headers=alice, data={"prompt": "x"})
    assert refused.status_code == 429 and "每日" in refused.json()["detail"]
    assert client.get("/tasks/history/me", headers=alice).json()["total"] == 1


def test_a_full_queue_answers_503_with_retry_after(tmp_path):
    with make_client(tmp_path, max_queue_size=1) as client:
        headers = register(client, "erin")
        held = submit(client, headers, prompt=f"{HOLD} one")
        submit(client, headers, prompt=f"{HOLD} two")  # the first one is running: one pending is allowed
        refused = client.post("/text-to-image", headers=headers, data={"prompt": f"{HOLD} three"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "10"
        assert refused.json() == {"detail": "任务队列已满，请稍后重试"}
        queue = client.get("/tasks/queue", headers=headers).json()
        assert queue["queue_size"] == 1 and queue["tasks"]["running"] == 1
        for task in client.get("/tasks/history/me", headers=headers).json()["items"]:
            client.delete(f"/tasks/{task['task_id']}", headers=headers)
        assert finished(client, headers, held)["status"] == "cancelled"


def test_a_task_reads_the_same_before_and_after_it_leaves_memory(client, alice, admin):
    task_id = submit(client, alice, num_images=2)
    live = finished(client, alice, task_id)
    assert live["progress"] == {"current_step": 20, "total_steps": 20, "percent": 100.0}
    cleaned = client.post("/tasks/cleanup", headers=admin, params={"max_age_hours": 0}).json()
    assert cleaned["memory_cleaned_count"] >= 1
    assert client.get(f"/tasks/{task_id}", headers=alice).json() == live
    result = client.get(f"/tasks/{task_id}/result", headers=alice)
    assert result.status_code == 200 and result.headers["content-type"] == "application/zip"

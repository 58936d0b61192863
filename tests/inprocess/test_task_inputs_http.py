"""``GET /tasks/{id}/inputs/{n}`` and the record's ``input_urls``: a task's inputs read back as sent."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.inprocess.conftest import png

pytestmark = pytest.mark.unit


def jpeg(size=(40, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def record_of(client, headers, task_id: str) -> dict:
    items = client.get("/tasks/history/me", headers=headers).json()["items"]
    return next(item for item in items if item["task_id"] == task_id)


def test_an_edits_inputs_come_back_as_sent_in_order_to_their_owner_only(client, alice, bob, admin):
    sent = [png((32, 24)), jpeg()]
    answer = client.post(
        "/image-edit",
        headers=alice,
        data={"prompt": "put them side by side"},
        files=[("images", ("a.png", sent[0], "image/png")), ("images", ("b.jpg", sent[1], "image/jpeg"))],
    )
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    urls = record_of(client, alice, task_id)["input_urls"]
    assert urls == [f"/tasks/{task_id}/inputs/0", f"/tasks/{task_id}/inputs/1"]
    assert "input_keys" not in record_of(client, alice, task_id)  # where they are stored is not shown
    for url, data, media in zip(urls, sent, ("image/png", "image/jpeg"), strict=True):
        got = client.get(url, headers=alice)
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"] == media and "private" in got.headers["cache-control"]
    assert client.get(urls[0], headers=admin).content == sent[0]
    assert client.get(urls[0], headers=bob).status_code == 404  # someone else's task is a 404
    assert client.get(urls[0]).status_code == 401
    past = client.get(f"/tasks/{task_id}/inputs/2", headers=alice)
    assert past.status_code == 404 and "2" in past.json()["detail"]


def test_a_text_to_image_task_has_no_inputs_and_a_removed_file_is_a_clear_404(client, alice, tmp_path):
    task_id = client.post("/text-to-image", headers=alice, data={"prompt": "a cat"}).json()["task_id"]
    assert record_of(client, alice, task_id)["input_urls"] == []
    assert client.get(f"/tasks/{task_id}/inputs/0", headers=alice).status_code == 404

    edit = client.post(
        "/image-edit", headers=alice, data={"prompt": "x"}, files={"images": ("a.png", png(), "image/png")}
    ).json()["task_id"]
    for stored in (tmp_path / "store" / "inputs" / edit).iterdir():
        stored.unlink()  # what a clean-up of old inputs leaves
    gone = client.get(f"/tasks/{edit}/inputs/0", headers=alice)
    assert gone.status_code == 404 and gone.json()["detail"]

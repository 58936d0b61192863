"""Per-image result URLs (``GET /tasks/{id}/images/{n}``) and the ``image_urls`` that point to them,
against the real service on the tiny profile."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from serving.routes.task_images import thumbnail
from tests.api.helpers import submit_t2i, wait_status, zip_pngs


def test_each_image_of_a_task_has_its_own_url_matching_the_zip(client, user):
    task_id = submit_t2i(client, user.headers, num_images=2, aspect_ratio="16:9", seed=11)
    status = wait_status(client, user.headers, task_id)
    assert status["status"] == "completed"
    urls = [f"/tasks/{task_id}/images/0", f"/tasks/{task_id}/images/1"]
    assert status["image_urls"] == urls
    record = client.get(f"/tasks/history/{task_id}", headers=user.headers).json()
    assert record["image_urls"] == urls
    listed = client.get("/tasks/history/me", headers=user.headers).json()["items"]
    assert next(item for item in listed if item["task_id"] == task_id)["image_urls"] == urls

    # The contract's ZIP is unchanged, and each URL answers exactly one of its PNGs, in order.
    result = client.get(f"/tasks/{task_id}/result", headers=user.headers)
    assert result.headers["content-type"] == "application/zip"
    members = zip_pngs(result.content)
    for url, member in zip(urls, members, strict=True):
        image = client.get(url, headers=user.headers)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content == member


def test_a_thumbnail_is_a_small_webp_of_the_same_picture(client, user):
    task_id = submit_t2i(client, user.headers, aspect_ratio="16:9", seed=5)
    wait_status(client, user.headers, task_id)
    full = client.get(f"/tasks/{task_id}/images/0", headers=user.headers)
    thumb = client.get(f"/tasks/{task_id}/images/0", headers=user.headers, params={"size": 256})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumb.content)) as small, Image.open(io.BytesIO(full.content)) as big:
        assert small.format == "WEBP" and max(small.size) == 256
        assert abs(small.size[1] - 256 * big.size[1] / big.size[0]) <= 1
        assert len(thumb.content) < len(full.content) / 5
        # The same picture: the thumbnail's mean colour is the full image's, within WebP's loss.
        mean_small = small.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        mean_big = big.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        assert all(abs(a - b) <= 6 for a, b in zip(mean_small, mean_big, strict=True))


@pytest.mark.unit
def test_a_transparent_images_thumbnail_keeps_its_alpha():
    """The page shows a transparent result on a checkerboard: its thumbnail must stay transparent."""
    rgba = Image.new("RGBA", (512, 256), (200, 40, 40, 0))
    rgba.paste((200, 40, 40, 255), (128, 64, 384, 192))  # an opaque block on a clear background
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    with Image.open(io.BytesIO(thumbnail(buffer.getvalue(), 128))) as small:
        assert small.format == "WEBP" and small.size == (128, 64) and small.mode == "RGBA"
        assert small.getpixel((2, 2))[3] == 0 and small.getpixel((64, 32))[3] == 255
    opaque = io.BytesIO()
    rgba.convert("RGB").save(opaque, format="PNG")
    with Image.open(io.BytesIO(thumbnail(opaque.getvalue(), 128))) as small:
        assert small.mode == "RGB"  # an opaque image gets no alpha channel


def test_images_are_cacheable_and_revalidate_with_their_etag(client, user):
    task_id = submit_t2i(client, user.headers)
    wait_status(client, user.headers, task_id)
    url = f"/tasks/{task_id}/images/0"
    first = client.get(url, headers=user.headers, params={"size": 128})
    cache_control = first.headers["cache-control"]
    assert "private" in cache_control and "immutable" in cache_control and "max-age=" in cache_control
    assert "no-store" not in cache_control
    etag = first.headers["etag"]
    again = client.get(url, headers={**user.headers, "If-None-Match": etag}, params={"size": 128})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    # Another size is another representation: its own tag, not a 304.
    other = client.get(url, headers={**user.headers, "If-None-Match": etag}, params={"size": 64})
    assert other.status_code == 200 and other.headers["etag"] != etag


def test_someone_elses_image_is_a_404_like_their_task(client, user, make_user, admin_headers):
    task_id = submit_t2i(client, user.headers)
    wait_status(client, user.headers, task_id)
    stranger = make_user("stranger")
    for url in (f"/tasks/{task_id}/images/0", f"/tasks/{task_id}"):
        answer = client.get(url, headers=stranger.headers)
        assert answer.status_code == 404 and answer.json() == {"detail": "任务不存在"}
    assert client.get(f"/tasks/{task_id}/images/0").status_code == 401
    assert client.get(f"/tasks/{task_id}/images/0", headers=admin_headers).status_code == 200


def test_the_browser_session_cookie_reads_images_too(base_url, client, user):
    task_id = submit_t2i(client, user.headers)
    wait_status(client, user.headers, task_id)
    with httpx.Client(base_url=base_url, timeout=60) as browser:
        browser.post("/auth/session", json={"username": user.username, "password": user.password})
        answer = browser.get(f"/tasks/{task_id}/images/0", params={"size": 64})
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/webp"


def test_a_bad_number_or_size_or_an_unfinished_task_is_a_clear_4xx(client, user):
    task_id = submit_t2i(client, user.headers, num_images=2)
    wait_status(client, user.headers, task_id)
    english = {**user.headers, "Accept-Language": "en"}
    beyond = client.get(f"/tasks/{task_id}/images/2", headers=english)
    assert beyond.status_code == 404
    assert beyond.json()["detail"] == "There is no image 2: this task has 2, numbered from 0"
    for bad in ("-1", "first"):
        answer = client.get(f"/tasks/{task_id}/images/{bad}", headers=english)
        assert answer.status_code == 400 and "n" in answer.json()["detail"], answer.text
    for size in ("8", "4096", "big"):
        answer = client.get(f"/tasks/{task_id}/images/0", headers=english, params={"size": size})
        assert answer.status_code == 400 and "size" in answer.json()["detail"], answer.text

    slow = submit_t2i(client, user.headers, num_inference_steps=100)
    early = client.get(f"/tasks/{slow}/images/0", headers=english)
    assert early.status_code == 409
    assert early.json()["detail"] == "The task has not finished yet; its images are not available"
    assert client.get(f"/tasks/{slow}", headers=user.headers).json()["image_urls"] is None
    client.delete(f"/tasks/{slow}", headers=user.headers)
    wait_status(client, user.headers, slow)
    cancelled = client.get(f"/tasks/{slow}/images/0", headers=english)
    assert cancelled.status_code == 409 and cancelled.json()["detail"] == "The task was cancelled"

"""``GET /v1/images/files/...`` (signed URLs, no credentials) through the real app over a real
SQLite file and result store (no Ray): a converted image is kept, and fetches are limited per address."""

from __future__ import annotations

import pytest

from serving.openai import images
from tests.inprocess.conftest import make_client, register

pytestmark = pytest.mark.unit


def _webp_url(client, headers) -> str:
    body = {"prompt": "x", "size": "256x256", "response_format": "url", "output_format": "webp"}
    response = client.post("/v1/images/generations", headers=headers, json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"][0]["url"]


def test_a_repeated_fetch_converts_the_image_once(tmp_path, monkeypatch):
    # Before: every fetch decoded the PNG and encoded the WebP again (~1 s for a 1024² image here).
    conversions = []
    convert = images.convert
    monkeypatch.setattr(images, "convert", lambda *args: conversions.append(args[1]) or convert(*args))
    with make_client(tmp_path) as client:
        url = _webp_url(client, register(client, "alice"))
        fetched = [client.get(url) for _ in range(5)]
        assert all(r.status_code == 200 and r.headers["content-type"] == "image/webp" for r in fetched)
        assert len({r.content for r in fetched}) == 1
        assert conversions == ["webp"]


def test_many_fetches_from_one_address_are_refused_with_429_and_retry_after(tmp_path):
    # Before: any number of fetches (each a conversion), valid URL or not.
    with make_client(tmp_path, image_fetch_max_per_address=4, image_fetch_window_seconds=60) as client:
        url = _webp_url(client, register(client, "alice"))
        forged = url.replace("signature=", "signature=0")[: len(url)]
        answers = [client.get(forged).status_code for _ in range(2)] + [client.get(url).status_code for _ in range(4)]
        assert answers == [403, 403, 200, 200, 429, 429]
        refused = client.get(url)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert 0 < int(refused.headers["Retry-After"]) <= 60

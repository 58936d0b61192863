"""A ``/v1`` stream (``stream=true``) lasts only as long as its credential, like ``/tasks/events``:
through the real app and its event hub (no Ray; the registry is the in-process stand-in)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.inprocess.conftest import HOLD, make_client, register

pytestmark = pytest.mark.unit


def test_a_v1_stream_opened_with_a_key_ends_with_an_error_once_the_key_is_revoked(tmp_path):
    # Before: the stream of a held task stayed open after the revocation, until the task ended.
    with make_client(tmp_path) as client:
        alice = register(client, "alice")
        key = client.post("/auth/api-keys", headers=alice, json={"name": "script"}).json()
        by_key = {"Authorization": f"Bearer {key['key']}"}

        answered = threading.Event()

        def revoke_once_the_task_runs() -> None:
            deadline = time.monotonic() + 10
            while not (tasks := client.get("/tasks/history/me", headers=alice).json()["items"]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.3)
            assert client.delete(f"/auth/api-keys/{key['id']}", headers=alice).status_code == 200
            if not answered.wait(5):  # the stream outlived its key: end the task so the test fails, not hangs
                client.delete(f"/tasks/{tasks[0]['task_id']}", headers=alice)

        revoker = threading.Thread(target=revoke_once_the_task_runs, daemon=True)
        revoker.start()
        started = time.monotonic()
        response = client.post(
            "/v1/images/generations",
            headers=by_key,
            json={"prompt": f"{HOLD} forever", "size": "256x256", "stream": True},
        )
        answered.set()
        revoker.join(5)
        assert response.status_code == 200
        assert time.monotonic() - started < 5
        assert "event: error" in response.text and '"code":"credentials_revoked"' in response.text
        assert "completed" not in response.text

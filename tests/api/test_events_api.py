"""Live task events (SSE) and signed webhooks, end to end through the real Serve proxy.

Two applications: the session's main app (tiny pipelines, for real previews) and ``/hooks``, a
``sleep``-profile app that allows webhook receivers on private networks (the receiver here runs on
127.0.0.1), retries after 0.3 s, gives a receiver 2 s, and caps event streams at 3 per user.
"""

from __future__ import annotations

import base64
import io
import threading

import httpx
import pytest
import ray
from PIL import Image

from serving.registry.ids import NAMESPACE, registry_name
from tests.api.helpers import SLOW, submit_t2i, wait_status
from tests.api.sse import COMMENT, collect, read_events
from tests.conftest import TestUser as Account
from tests.conftest import sleep_app_args, wait_for
from tests.webhook_receiver import Receiver

TERMINAL = {"completed", "failed", "cancelled"}
STREAM_CAP = 3
# A receiver's time to answer: long enough that a 1 s task is done well within it on a slow machine.
HOOK_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def hooks_client(deploy_app, data_root):
    url = deploy_app(
        "hooks",
        sleep_app_args(
            data_root,
            "hooks",
            model_profile="faulty",  # the sleep profile, whose prompts can also ask for a slower step
            sleep_seconds_per_step=0.05,
            model_replicas=1,
            webhook_allow_private_networks=True,
            webhook_retry_schedule=[0.3, 0.3, 0.3, 0.3],
            webhook_retry_jitter=0.0,
            webhook_timeout_seconds=HOOK_TIMEOUT_S,
            max_event_streams_per_user=STREAM_CAP,
            event_keepalive_seconds=0.5,
        ),
    )
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client


@pytest.fixture
def hooks_user(hooks_client) -> Account:
    return Account(hooks_client, "hook")


def secret_of(client, user) -> str:
    response = client.get("/auth/webhook-secret", headers=user.headers)
    assert response.status_code == 200 and response.json()["secret"].startswith("whsec_")
    return response.json()["secret"]


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


# ---------------------------------------------------------------- event streams


def test_stream_follows_a_task_live_from_queue_to_completion(hooks_client, hooks_user):
    # 40 steps of 0.15 s: the stream is open and the status read well before the task ends.
    task_id = submit_t2i(hooks_client, hooks_user.headers, prompt=f"{SLOW} live", num_inference_steps=40)
    status_at_first_progress = {}

    def first_progress(event) -> bool:
        if event.event == "progress" and not status_at_first_progress:
            status_at_first_progress.update(hooks_client.get(f"/tasks/{task_id}", headers=hooks_user.headers).json())
        return False

    events = collect(hooks_client, f"/tasks/{task_id}/events", hooks_user.headers, until=first_progress)
    names = [e.event for e in events]
    assert names[-1] == "completed" and names.count("completed") == 1
    assert "started" in names and names.index("started") < names.index("progress")
    assert [e.id for e in events] == sorted({e.id for e in events})
    progress = [e for e in events if e.event == "progress"]
    steps = [p.data["current_step"] for p in progress]
    assert len(progress) >= 3 and steps == sorted(steps)
    # The words of the status's "progress" (GET /tasks/{id}).
    assert progress[-1].data == {"task_id": task_id, "current_step": 40, "total_steps": 40, "percent": 100.0}
    # Spread over the run, not bunched at the end: the first progress event came while the task ran.
    assert status_at_first_progress["status"] == "running"
    assert status_at_first_progress["progress"]["current_step"] < 40
    done = events[-1].data
    assert done["task_id"] == task_id and done["result_url"] == f"/tasks/{task_id}/result"
    assert isinstance(done["seed"], int) and done["generation_seconds"] > 0


def test_previews_decode_as_images_of_the_tasks_aspect_ratio_and_can_be_turned_off(client, user):
    task_id = submit_t2i(client, user.headers, aspect_ratio="16:9", num_inference_steps=30)
    without: list = []
    reader = threading.Thread(
        target=lambda: without.extend(collect(client, f"/tasks/{task_id}/events", user.headers, previews="false"))
    )
    reader.start()
    events = collect(client, f"/tasks/{task_id}/events", user.headers)
    reader.join(timeout=120)
    previews = [e for e in events if e.event == "preview"]
    assert previews and events[-1].event == "completed"
    for preview in previews:
        image = decode(preview.data["b64"])
        assert image.format == "WEBP" and preview.data["media_type"] == "image/webp"
        assert image.size == (preview.data["width"], preview.data["height"])
        assert max(image.size) <= 512 and abs(image.width / image.height - 1664 / 928) < 0.02
        assert 0 < preview.data["current_step"] < preview.data["total_steps"] == 30
    assert without and without[-1].event == "completed" and not any(e.event == "preview" for e in without)


def test_disconnect_leaves_the_task_running_and_last_event_id_resumes_to_the_end(hooks_client, hooks_user):
    task_id = submit_t2i(hooks_client, hooks_user.headers, num_inference_steps=60)
    first = collect(hooks_client, f"/tasks/{task_id}/events", hooks_user.headers, until=lambda e: e.event == "progress")
    last_seen = first[-1].id
    assert hooks_client.get(f"/tasks/{task_id}", headers=hooks_user.headers).json()["status"] in (
        "running",
        "completed",
    )
    resumed = collect(hooks_client, f"/tasks/{task_id}/events", {**hooks_user.headers, "Last-Event-ID": str(last_seen)})
    assert resumed[-1].event == "completed"
    assert all(e.id > last_seen for e in resumed) and "queued" not in [e.event for e in resumed]
    # Resuming after the end still gives the terminal event.
    after_end = collect(
        hooks_client,
        f"/tasks/{task_id}/events",
        {**hooks_user.headers, "Last-Event-ID": str(resumed[-2].id if len(resumed) > 1 else last_seen)},
    )
    assert [e.event for e in after_end] == ["completed"] and after_end[0].id == resumed[-1].id


def test_a_finished_task_answers_its_terminal_event_at_once_even_after_leaving_memory(hooks_client, hooks_user):
    task_id = submit_t2i(hooks_client, hooks_user.headers)
    wait_status(hooks_client, hooks_user.headers, task_id)
    live = collect(hooks_client, f"/tasks/{task_id}/events", hooks_user.headers)
    assert [e.event for e in live] == ["completed"]
    admin = {
        "Authorization": "Bearer "
        + hooks_client.post("/auth/login", json={"username": "admin", "password": "admin123"}).json()["access_token"]
    }
    assert hooks_client.post("/tasks/cleanup", headers=admin, params={"max_age_hours": 0}).status_code == 200
    stored = collect(hooks_client, f"/tasks/{task_id}/events", hooks_user.headers)
    assert [(e.id, e.event) for e in stored] == [(live[0].id, "completed")]
    assert stored[0].data["seed"] == live[0].data["seed"] and stored[0].data["result_url"] == live[0].data["result_url"]


def test_someone_elses_task_stream_is_a_404_and_a_bad_last_event_id_a_400(hooks_client, hooks_user):
    task_id = submit_t2i(hooks_client, hooks_user.headers)
    other = Account(hooks_client, "other")
    assert hooks_client.get(f"/tasks/{task_id}/events", headers=other.headers).status_code == 404
    assert hooks_client.get(f"/tasks/{task_id}/webhooks", headers=other.headers).status_code == 404
    assert hooks_client.get("/tasks/no-such-task/events", headers=other.headers).status_code == 404
    bad = hooks_client.get(f"/tasks/{task_id}/events", headers={**hooks_user.headers, "Last-Event-ID": "x"})
    assert bad.status_code == 400 and bad.json()["detail"]
    assert hooks_client.get(f"/tasks/{task_id}/events").status_code == 401


def test_all_tasks_stream_keeps_alive_while_quiet_and_is_capped_per_user(hooks_client, hooks_user):
    events = []
    with hooks_client.stream("GET", "/tasks/events", headers=hooks_user.headers) as stream:
        extra = [hooks_client.stream("GET", "/tasks/events", headers=hooks_user.headers) for _ in range(STREAM_CAP - 1)]
        opened = [s.__enter__() for s in extra]
        try:
            assert all(r.status_code == 200 for r in opened)
            over = hooks_client.get("/tasks/events", headers=hooks_user.headers)
            assert over.status_code == 429 and over.json()["detail"]
        finally:
            for s in extra:
                s.__exit__(None, None, None)
        reader = read_events(stream, comments=True)
        assert next(reader).event == COMMENT  # nothing happens yet: a keep-alive comment comes
        ids = [submit_t2i(hooks_client, hooks_user.headers, num_inference_steps=20) for _ in range(2)]
        for event in reader:
            if event.event != COMMENT:
                events.append(event)
            if sum(e.event == "completed" for e in events) == 2:
                break
    assert {e.data["task_id"] for e in events} == set(ids)
    for task_id in ids:
        mine = [e.event for e in events if e.data["task_id"] == task_id]
        assert mine[0] == "queued" and mine[-1] == "completed" and "progress" in mine
    # The capped streams were closed: a new one opens.
    wait_for(lambda: _opens(hooks_client, hooks_user.headers), timeout=20, what="a stream after others closed")


def _opens(client, headers) -> bool:
    with client.stream("GET", "/tasks/events", headers=headers) as response:
        return response.status_code == 200


# ---------------------------------------------------------------- webhooks


def test_webhook_500_twice_then_200_is_resent_with_the_same_id_and_a_valid_signature(hooks_client, hooks_user):
    secret = secret_of(hooks_client, hooks_user)
    with Receiver(secret) as receiver:
        receiver.answers["/flaky"] = [500, 500, 200]
        task_id = submit_t2i(hooks_client, hooks_user.headers, webhook_url=receiver.url("/flaky"))
        got = receiver.wait_for(lambda r: len([x for x in r if x.path == "/flaky"]) >= 3)
    assert len({r.webhook_id for r in got}) == 1 and all(r.verified for r in got)
    payload = got[0].payload
    assert payload["type"] == "task.completed" and payload["data"]["task_id"] == task_id
    assert payload["data"]["status"] == "completed" and payload["data"]["result_url"] == f"/tasks/{task_id}/result"
    assert "b64" not in got[0].body.decode()
    log = wait_for(lambda: _delivered(hooks_client, hooks_user, task_id), what="delivery log")
    assert [a["status_code"] for a in log["attempts"]] == [500, 500, 200]
    assert log["webhook_id"] == got[0].webhook_id


def _delivered(client, user, task_id):
    deliveries = client.get(f"/tasks/{task_id}/webhooks", headers=user.headers).json()["deliveries"]
    return deliveries[0] if deliveries and deliveries[0]["status"] == "delivered" else None


def test_webhook_410_stops_delivery(hooks_client, hooks_user):
    secret = secret_of(hooks_client, hooks_user)
    with Receiver(secret) as receiver:
        receiver.answers["/gone"] = [410]
        task_id = submit_t2i(
            hooks_client, hooks_user.headers, webhook_url=receiver.url("/gone"), webhook_events="started,completed"
        )
        wait_status(hooks_client, hooks_user.headers, task_id)
        log = wait_for(lambda: _all_settled(hooks_client, hooks_user, task_id), what="settled deliveries")
        assert len(receiver.at("/gone")) == 1
    assert [d["status"] for d in log] == ["gone", "gone"]
    assert [d["event_type"] for d in log] == ["task.started", "task.completed"]


def _all_settled(client, user, task_id):
    deliveries = client.get(f"/tasks/{task_id}/webhooks", headers=user.headers).json()["deliveries"]
    return deliveries if len(deliveries) == 2 and all(d["status"] != "pending" for d in deliveries) else None


def test_a_hanging_receiver_times_out_and_the_task_completes_meanwhile(hooks_client, hooks_user):
    secret = secret_of(hooks_client, hooks_user)
    with Receiver(secret) as receiver:
        receiver.answers["/hang"] = [("hang", 60), 200]
        task_id = submit_t2i(
            hooks_client, hooks_user.headers, webhook_url=receiver.url("/hang"), webhook_events="started,completed"
        )
        receiver.wait_for(lambda r: any(x.path == "/hang" for x in r))
        # The first delivery hangs in the receiver; the task does not wait for it.
        assert wait_status(hooks_client, hooks_user.headers, task_id)["status"] == "completed"
        log = hooks_client.get(f"/tasks/{task_id}/webhooks", headers=hooks_user.headers).json()["deliveries"]
        assert log[0]["attempt_count"] == 0  # still hanging when the task had completed
        settled = wait_for(lambda: _all_delivered(hooks_client, hooks_user, task_id), what="both delivered")
    first = settled[0]
    assert "timed out" in first["attempts"][0]["error"] and first["attempts"][-1]["status_code"] == 200


def _all_delivered(client, user, task_id):
    deliveries = client.get(f"/tasks/{task_id}/webhooks", headers=user.headers).json()["deliveries"]
    return deliveries if len(deliveries) == 2 and all(d["status"] == "delivered" for d in deliveries) else None


def test_refused_webhook_urls_are_a_400_at_submission(client, user, hooks_client, hooks_user):
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "ftp://example.com/x",
        "http://127.0.0.1:9/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://user:pw@example.com/x",
    ):
        response = client.post(
            "/text-to-image",
            headers=user.headers,
            data={"prompt": "p", "num_inference_steps": "20", "webhook_url": url},
        )
        assert response.status_code == 400 and "webhook_url" in response.json()["detail"], (url, response.text)
    # Even where private networks are allowed, the metadata address is not.
    response = hooks_client.post(
        "/text-to-image",
        headers=hooks_user.headers,
        data={"prompt": "p", "num_inference_steps": "20", "webhook_url": "http://169.254.169.254/"},
    )
    assert response.status_code == 400
    response = hooks_client.post(
        "/text-to-image",
        headers=hooks_user.headers,
        data={
            "prompt": "p",
            "num_inference_steps": "20",
            "webhook_url": "http://127.0.0.1:9/",
            "webhook_events": "completed,queued",
        },
    )
    assert response.status_code == 400 and "webhook_events" in response.json()["detail"]


def test_secret_rotation_changes_the_secret(hooks_client, hooks_user):
    first = secret_of(hooks_client, hooks_user)
    assert secret_of(hooks_client, hooks_user) == first
    rotated = hooks_client.post("/auth/webhook-secret", headers=hooks_user.headers).json()["secret"]
    assert rotated != first and secret_of(hooks_client, hooks_user) == rotated


def test_deliveries_pending_when_the_registry_dies_are_delivered_by_the_next_one(hooks_client, hooks_user):
    secret = secret_of(hooks_client, hooks_user)
    with Receiver(secret) as receiver:
        # The first attempt is asked to come back in 4 s: the delivery is pending when the registry dies.
        receiver.answers["/later"] = [(503, {"Retry-After": "4"}), 200]
        task_id = submit_t2i(hooks_client, hooks_user.headers, webhook_url=receiver.url("/later"))
        receiver.wait_for(lambda r: any(x.path == "/later" for x in r))

        def first_attempt_logged():
            deliveries = hooks_client.get(f"/tasks/{task_id}/webhooks", headers=hooks_user.headers).json()
            attempts = deliveries["deliveries"][0]["attempts"] if deliveries["deliveries"] else []
            return attempts if [a["status_code"] for a in attempts] == [503] else None

        # The receiver has answered; the registry records the attempt just after (killed before
        # that, the attempt would be made again, unlogged, and the log below would not be the point).
        wait_for(first_attempt_logged, timeout=30, what="first attempt logged")
        ray.kill(ray.get_actor(registry_name("hooks"), namespace=NAMESPACE), no_restart=False)
        got = receiver.wait_for(lambda r: len([x for x in r if x.path == "/later"]) >= 2, timeout=120)
    later = [r for r in got if r.path == "/later"]
    assert later[0].webhook_id == later[1].webhook_id and all(r.verified for r in later)
    log = wait_for(lambda: _delivered(hooks_client, hooks_user, task_id), timeout=60, what="delivered after restart")
    assert [a["status_code"] for a in log["attempts"]] == [503, 200]

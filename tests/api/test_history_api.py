"""History, statistics, quotas and clean-up through the API (contract § 5.5–5.11).

Tests that submit tasks only to count, list, refuse or clean them up run on ``/faulty``
(``faulty_client``: the ``sleep`` profile, auth on): what they check is the registry's and the
database's, never what the model computes, so their steps need not be tiny-pipeline steps.
"""

from __future__ import annotations

import concurrent.futures
from datetime import datetime, timedelta, timezone

from sqlmodel import select

from storage import LocalResultStore, TaskRecord, init_db, make_engine, session_scope
from storage.db import sqlite_url
from tests.api.helpers import both_replicas_held, submit_t2i, wait_status
from tests.conftest import TestUser

RECORD_FIELDS = {
    "id",
    "task_id",
    "user_id",
    "task_type",
    "prompt",
    "negative_prompt",
    "parameters",
    "status",
    "result_path",
    "result_filename",
    "error_message",
    "created_at",
    "started_at",
    "completed_at",
    "execution_time",
}


def _set_quota(client, admin_headers, user_id, **limits):
    response = client.put(f"/auth/users/{user_id}/quota", headers=admin_headers, json=limits)
    assert response.status_code == 200, response.text
    return response.json()


def test_history_lists_own_tasks_newest_first_with_filters(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    done = [submit_t2i(client, user.headers, prompt=f"p{i}") for i in range(3)]
    failed = submit_t2i(client, user.headers, prompt="__fault_raise__ boom")
    for t in [*done, failed]:
        wait_status(client, user.headers, t)
    other = TestUser(client)
    submit_t2i(client, other.headers)

    page = client.get("/tasks/history/me", headers=user.headers, params={"page_size": 2}).json()
    assert page["total"] == 4 and page["total_pages"] == 2 and page["page"] == 1 and page["page_size"] == 2
    assert [i["task_id"] for i in page["items"]] == [failed, done[2]]
    assert set(page["items"][0]) >= RECORD_FIELDS
    second = client.get("/tasks/history/me", headers=user.headers, params={"page_size": 2, "page": 2}).json()
    assert [i["task_id"] for i in second["items"]] == [done[1], done[0]]

    only_failed = client.get("/tasks/history/me", headers=user.headers, params={"status": "failed"}).json()
    assert [i["task_id"] for i in only_failed["items"]] == [failed]
    assert "injected" in only_failed["items"][0]["error_message"]
    edits = client.get("/tasks/history/me", headers=user.headers, params={"task_type": "image_edit"}).json()
    assert edits["total"] == 0
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert client.get("/tasks/history/me", headers=user.headers, params={"start_date": future}).json()["total"] == 0
    assert client.get("/tasks/history/me", headers=user.headers, params={"end_date": future}).json()["total"] == 4

    completed = client.get(f"/tasks/history/{done[0]}", headers=user.headers).json()
    assert completed["result_filename"] == f"generated_{done[0]}.png"
    assert completed["result_path"].startswith("results/") and not completed["result_path"].startswith("/")
    assert completed["parameters"]["num_inference_steps"] == 20


def test_history_rejects_bad_filters_with_400(client, user):
    for params in (
        {"page_size": 101},
        {"page": 0},
        {"status": "weird"},
        {"task_type": "video"},
        {"start_date": "yesterday"},
    ):
        response = client.get("/tasks/history/me", headers=user.headers, params=params)
        assert response.status_code == 400, params


def test_admin_history_sees_everyone_and_filters_by_user(faulty_client, faulty_admin_headers, faulty_user):
    client, admin_headers, user = faulty_client, faulty_admin_headers, faulty_user
    task_id = submit_t2i(client, user.headers)
    wait_status(client, user.headers, task_id)
    mine = client.get("/tasks/history/all", headers=admin_headers, params={"user_id": user.id}).json()
    assert mine["total"] == 1 and mine["items"][0]["task_id"] == task_id
    everyone = client.get("/tasks/history/all", headers=admin_headers, params={"page_size": 100}).json()
    assert everyone["total"] >= 1 and len({i["user_id"] for i in everyone["items"]}) >= 1


def test_statistics_match_the_history(faulty_client, faulty_user, faulty_admin_headers):
    client, user, admin_headers = faulty_client, faulty_user, faulty_admin_headers
    ids = [submit_t2i(client, user.headers), submit_t2i(client, user.headers, prompt="__fault_raise__")]
    for t in ids:
        wait_status(client, user.headers, t)
    stats = client.get("/tasks/statistics/me", headers=user.headers).json()
    items = client.get("/tasks/history/me", headers=user.headers, params={"page_size": 100}).json()["items"]
    completed = [i for i in items if i["status"] == "completed"]
    assert stats["total_tasks"] == len(items) == 2
    assert stats["completed_tasks"] == len(completed) == 1
    assert stats["failed_tasks"] == 1 and stats["pending_tasks"] == 0
    assert stats["text_to_image_count"] == 2 and stats["image_edit_count"] == 0 and stats["batch_edit_count"] == 0
    assert abs(stats["total_execution_time"] - sum(i["execution_time"] for i in completed)) < 0.01
    assert abs(stats["avg_execution_time"] - completed[0]["execution_time"]) < 0.01
    global_stats = client.get("/tasks/statistics/global", headers=admin_headers).json()
    assert global_stats["total_tasks"] >= 2 and global_stats["today_tasks"] >= 2 and global_stats["active_users"] >= 1


def test_quota_counts_images_and_refuses_over_the_daily_limit_with_429(
    faulty_client, faulty_user, faulty_admin_headers
):
    client, user, admin_headers = faulty_client, faulty_user, faulty_admin_headers
    _set_quota(client, admin_headers, user.id, daily_limit=3)
    quota = client.get("/tasks/quota/me", headers=user.headers).json()
    assert quota == {
        **quota,
        "user_id": user.id,
        "daily_limit": 3,
        "monthly_limit": 3000,
        "used_today": 0,
        "remaining_today": 3,
        "remaining_this_month": 3000,
        "default_daily_limit": 100,  # what applies again once the user's own limit is removed
        "default_monthly_limit": 3000,
    }
    task_id = submit_t2i(client, user.headers, num_images=2)
    used = client.get("/tasks/quota/me", headers=user.headers).json()
    assert used["used_today"] == 2 and used["remaining_today"] == 1 and used["total_used"] == 2
    before = client.get("/tasks/history/me", headers=user.headers).json()["total"]
    refused = client.post("/text-to-image", headers=user.headers, data={"prompt": "x", "num_images": "2"})
    assert refused.status_code == 429
    assert "每日" in refused.json()["detail"] and "重置" in refused.json()["detail"]
    assert client.get("/tasks/history/me", headers=user.headers).json()["total"] == before
    wait_status(client, user.headers, task_id)


def test_monthly_limit_is_enforced_too(faulty_client, faulty_user, faulty_admin_headers):
    client, user, admin_headers = faulty_client, faulty_user, faulty_admin_headers
    _set_quota(client, admin_headers, user.id, monthly_limit=1)
    task_id = submit_t2i(client, user.headers)
    refused = client.post("/text-to-image", headers=user.headers, data={"prompt": "x"})
    assert refused.status_code == 429 and "每月" in refused.json()["detail"]
    wait_status(client, user.headers, task_id)  # not left on a replica the next test counts on


def test_failed_and_never_started_cancelled_tasks_give_quota_back(faulty_client, faulty_user, faulty_admin_headers):
    client, user, admin_headers = faulty_client, faulty_user, faulty_admin_headers
    _set_quota(client, admin_headers, user.id, daily_limit=1)
    failing = submit_t2i(client, user.headers, prompt="__fault_raise__")
    assert wait_status(client, user.headers, failing)["status"] == "failed"
    assert client.get("/tasks/quota/me", headers=user.headers).json()["used_today"] == 0
    _set_quota(client, admin_headers, user.id, daily_limit=100)
    # Held blockers: both replicas stay busy, so the victim is cancelled before it starts.
    with both_replicas_held(client, user.headers) as blockers:
        victim = submit_t2i(client, user.headers)
        assert client.delete(f"/tasks/{victim}", headers=user.headers).json()["status"] == "cancelled"
        assert client.get("/tasks/quota/me", headers=user.headers).json()["used_today"] == 2
    for t in blockers:
        wait_status(client, user.headers, t, timeout=180)


def test_two_concurrent_submissions_cannot_both_take_the_last_unit(faulty_client, faulty_user, faulty_admin_headers):
    client, user, admin_headers = faulty_client, faulty_user, faulty_admin_headers
    _set_quota(client, admin_headers, user.id, daily_limit=1)

    def post():
        return client.post("/text-to-image", headers=user.headers, data={"prompt": "race"}).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: post(), range(4)))
    assert codes == [202, 429, 429, 429]


def test_admin_reads_and_resets_a_users_limits(client, admin_headers, user):
    assert _set_quota(client, admin_headers, user.id, daily_limit=7)["daily_limit"] == 7
    assert client.get(f"/auth/users/{user.id}/quota", headers=admin_headers).json()["daily_limit"] == 7
    # The list of users carries each one's own limits (null: the default), for the admin page.
    listed = {u["id"]: u for u in client.get("/auth/users", headers=admin_headers, params={"limit": 1000}).json()}
    assert (listed[user.id]["daily_limit"], listed[user.id]["monthly_limit"]) == (7, None)
    assert _set_quota(client, admin_headers, user.id, daily_limit=None)["daily_limit"] == 100
    listed = {u["id"]: u for u in client.get("/auth/users", headers=admin_headers, params={"limit": 1000}).json()}
    assert listed[user.id]["daily_limit"] is None
    bad = client.put(f"/auth/users/{user.id}/quota", headers=admin_headers, json={"daily_limit": -1})
    assert bad.status_code == 400


def test_cleanup_deletes_old_records_with_their_files_and_keeps_recent_and_unfinished(
    faulty_client, faulty_admin_headers, faulty_user, data_root
):
    client, admin_headers, user = faulty_client, faulty_admin_headers, faulty_user
    engine = make_engine(sqlite_url(data_root / "faulty"))
    init_db(engine)
    store = LocalResultStore(data_root / "faulty" / "store")
    old = datetime.now(timezone.utc) - timedelta(days=40)
    old_ids = [f"old-{i}-{user.id}" for i in range(3)]
    with session_scope(engine) as session:
        for task_id in old_ids:
            session.add(
                TaskRecord(
                    task_id=task_id,
                    user_id=user.id,
                    task_type="text_to_image",
                    prompt="old",
                    status="completed",
                    created_at=old,
                    result_path=f"results/{task_id}/x.png",
                )
            )
            store.put(f"results/{task_id}/x.png", b"png")
            store.put(f"inputs/{task_id}/0.png", b"png")
        # Unfinished records are never cleaned, however old (inserted behind the registry's back,
        # so the test removes it again below).
        session.add(
            TaskRecord(
                task_id=f"old-pending-{user.id}",
                user_id=user.id,
                task_type="text_to_image",
                prompt="old but unfinished",
                status="pending",
                created_at=old,
            )
        )
    recent = submit_t2i(client, user.headers)
    wait_status(client, user.headers, recent)
    response = client.post("/tasks/cleanup", headers=admin_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["db_cleaned_count"] >= 3
    assert body["message"] == (
        f"已清理 {body['memory_cleaned_count']} 个内存任务记录，{body['db_cleaned_count']} 个数据库历史记录"
    )
    with session_scope(engine) as session:
        left = {r.task_id for r in session.exec(select(TaskRecord).where(TaskRecord.user_id == user.id))}
    assert not (left & set(old_ids)) and recent in left and f"old-pending-{user.id}" in left
    with session_scope(engine) as session:
        session.delete(session.exec(select(TaskRecord).where(TaskRecord.task_id == f"old-pending-{user.id}")).one())
    assert not any(store.exists(f"results/{t}/x.png") or store.exists(f"inputs/{t}/0.png") for t in old_ids)
    assert client.get(f"/tasks/{recent}/result", headers=user.headers).status_code == 200


def test_cleanup_of_memory_keeps_tasks_readable_from_the_database(open_client):
    task_id = open_client.post("/text-to-image", data={"prompt": "x", "num_inference_steps": "20"}).json()["task_id"]
    wait_status(open_client, {}, task_id, timeout=60)
    body = open_client.post("/tasks/cleanup", params={"max_age_hours": 0}).json()
    assert body["memory_cleaned_count"] >= 1 and body["db_cleaned_count"] == 0
    status = open_client.get(f"/tasks/{task_id}").json()
    assert status["status"] == "completed" and status["progress"]["percent"] == 100.0
    assert open_client.get(f"/tasks/{task_id}/result").status_code == 200

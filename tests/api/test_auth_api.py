"""The /auth API of contract § 1 against the real service."""

from __future__ import annotations

from tests.conftest import bearer, login, unique_name

USER_FIELDS = {"id", "username", "email", "is_active", "is_admin", "created_at"}


def test_register_returns_201_with_the_user_object(client):
    name = unique_name()
    response = client.post("/auth/register", json={"username": name, "password": "secret1", "email": "a@example.com"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["username"] == name and body["email"] == "a@example.com"
    assert body["is_active"] is True and body["is_admin"] is False
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")


def test_register_duplicate_username_is_400(client, user):
    response = client.post("/auth/register", json={"username": user.username, "password": "secret1"})
    assert response.status_code == 400
    assert response.json() == {"detail": "用户名已存在"}


def test_register_validation_errors_are_400_naming_the_field(client):
    for body, field in (
        ({"username": "ab", "password": "secret1"}, "username"),
        ({"username": unique_name(), "password": "12345"}, "password"),
        ({"password": "secret1"}, "username"),
        ({"username": "x" * 51, "password": "secret1"}, "username"),
    ):
        response = client.post("/auth/register", json=body)
        assert response.status_code == 400, body
        assert field in response.json()["detail"]


def test_register_cannot_create_an_admin(client):
    name = unique_name()
    response = client.post("/auth/register", json={"username": name, "password": "secret1", "is_admin": True})
    assert response.status_code == 201
    assert response.json()["is_admin"] is False


def test_login_returns_a_bearer_token_valid_for_a_day(client, user):
    response = client.post("/auth/login", json={"username": user.username, "password": user.password})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 86400 and body["access_token"]


def test_login_with_wrong_password_or_unknown_user_is_401_with_the_same_message(client, user):
    wrong = client.post("/auth/login", json={"username": user.username, "password": "nope-nope"})
    unknown = client.post("/auth/login", json={"username": unique_name(), "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "用户名或密码错误"}


def test_me_requires_a_valid_token(client):
    for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic abc"}):
        response = client.get("/auth/me", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"detail": "无效的认证凭据"}
        assert response.headers["www-authenticate"] == "Bearer"


def test_me_returns_the_current_user(client, user):
    response = client.get("/auth/me", headers=user.headers)
    assert response.status_code == 200
    assert response.json()["username"] == user.username


def test_update_me_changes_email_but_never_the_admin_flag(client, user):
    response = client.put("/auth/me", headers=user.headers, json={"email": "new@example.com", "is_admin": True})
    assert response.status_code == 200
    assert response.json()["email"] == "new@example.com"
    assert response.json()["is_admin"] is False
    assert client.get("/auth/me", headers=user.headers).json()["is_admin"] is False


def test_update_me_with_a_new_password_revokes_older_tokens(client, user):
    response = client.put(
        "/auth/me", headers=user.headers, json={"password": "brand-new-1", "current_password": user.password}
    )
    assert response.status_code == 200
    assert client.get("/auth/me", headers=user.headers).status_code == 401
    assert client.get("/auth/me", headers=bearer(login(client, user.username, "brand-new-1"))).status_code == 200


def test_change_password_checks_the_old_one_and_revokes_tokens(client, user):
    bad = client.post(
        "/auth/change-password", headers=user.headers, json={"old_password": "wrong-old", "new_password": "another-1"}
    )
    assert bad.status_code == 400
    short = client.post(
        "/auth/change-password", headers=user.headers, json={"old_password": user.password, "new_password": "123"}
    )
    assert short.status_code == 400 and "new_password" in short.json()["detail"]
    ok = client.post(
        "/auth/change-password", headers=user.headers, json={"old_password": user.password, "new_password": "another-1"}
    )
    assert ok.status_code == 200 and ok.json() == {"message": "密码修改成功"}
    assert client.get("/auth/me", headers=user.headers).status_code == 401
    assert client.post("/auth/login", json={"username": user.username, "password": user.password}).status_code == 401
    login(client, user.username, "another-1")


def test_admin_endpoints_refuse_non_admins_with_403(client, user, make_user):
    other = make_user()
    calls = [
        ("GET", "/auth/users"),
        ("PUT", f"/auth/users/{other.id}/toggle-active"),
        ("PUT", f"/auth/users/{other.id}/toggle-admin"),
        ("DELETE", f"/auth/users/{other.id}"),
        ("GET", "/tasks/history/all"),
        ("GET", "/tasks/statistics/global"),
        ("POST", "/tasks/cleanup"),
        ("GET", f"/auth/users/{other.id}/quota"),
    ]
    for method, path in calls:
        response = client.request(method, path, headers=user.headers)
        assert response.status_code == 403, path
        assert response.json() == {"detail": "需要管理员权限"}


def test_admin_lists_users_with_skip_and_limit(client, admin_headers, make_user):
    make_user(), make_user()
    listed = client.get("/auth/users", headers=admin_headers, params={"limit": 1000})
    everyone = listed.json()
    assert {"admin"} <= {u["username"] for u in everyone}
    assert int(listed.headers["x-total-count"]) >= len(everyone)  # how many in all, for paging
    page = client.get("/auth/users", headers=admin_headers, params={"skip": 1, "limit": 2}).json()
    assert [u["id"] for u in page] == [u["id"] for u in everyone[1:3]]
    # The admin's list adds each user's own limits (never a password hash or a key).
    assert all(set(u) == USER_FIELDS | {"daily_limit", "monthly_limit"} for u in page)


def test_admin_searches_users_by_part_of_a_name_in_any_case(client, admin_headers, make_user):
    first, second = make_user("Findme"), make_user("findme")
    make_user("other")
    found = client.get("/auth/users", headers=admin_headers, params={"q": " FINDME ", "limit": 1})
    assert found.status_code == 200 and found.headers["x-total-count"] == "2"  # every match, not the page
    assert [u["id"] for u in found.json()] == [first.id]
    rest = client.get("/auth/users", headers=admin_headers, params={"q": "findme", "skip": 1}).json()
    assert [u["id"] for u in rest] == [second.id]
    too_long = client.get("/auth/users", headers=admin_headers, params={"q": "x" * 256})
    assert too_long.status_code == 400 and "q" in too_long.json()["detail"], too_long.text
    nul = client.get("/auth/users", headers=admin_headers, params={"q": "a\x00b"})  # PostgreSQL refuses it
    assert nul.status_code == 400 and "q" in nul.json()["detail"], nul.text


def test_toggle_active_disables_login_and_revokes_tokens(client, admin_headers, user):
    response = client.put(f"/auth/users/{user.id}/toggle-active", headers=admin_headers)
    assert response.json() == {"message": "用户已禁用", "user_id": user.id, "is_active": False}
    assert client.get("/auth/me", headers=user.headers).status_code == 401
    refused = client.post("/auth/login", json={"username": user.username, "password": user.password})
    assert refused.status_code == 403
    again = client.put(f"/auth/users/{user.id}/toggle-active", headers=admin_headers)
    assert again.json() == {"message": "用户已启用", "user_id": user.id, "is_active": True}
    login(client, user.username, user.password)


def test_toggle_admin_grants_and_revokes_admin(client, admin_headers, user):
    granted = client.put(f"/auth/users/{user.id}/toggle-admin", headers=admin_headers)
    assert granted.json() == {"message": "用户已设置为管理员", "user_id": user.id, "is_admin": True}
    assert client.get("/auth/users", headers=user.headers).status_code == 200
    revoked = client.put(f"/auth/users/{user.id}/toggle-admin", headers=admin_headers)
    assert revoked.json() == {"message": "已取消用户的管理员权限", "user_id": user.id, "is_admin": False}
    assert client.get("/auth/users", headers=user.headers).status_code == 403


def test_delete_user_removes_it_and_its_tokens(client, admin_headers, user):
    response = client.delete(f"/auth/users/{user.id}", headers=admin_headers)
    assert response.status_code == 200
    assert response.json() == {"message": f"用户 {user.username} 已删除"}
    assert client.get("/auth/me", headers=user.headers).status_code == 401
    assert client.delete(f"/auth/users/{user.id}", headers=admin_headers).status_code == 404


def test_admin_cannot_disable_or_delete_itself(client, admin_headers):
    me = client.get("/auth/me", headers=admin_headers).json()
    assert client.put(f"/auth/users/{me['id']}/toggle-active", headers=admin_headers).status_code == 400
    assert client.delete(f"/auth/users/{me['id']}", headers=admin_headers).status_code == 400


def test_repeated_failed_logins_are_throttled_with_retry_after(client, user):
    for _ in range(5):
        assert client.post("/auth/login", json={"username": user.username, "password": "bad-pass"}).status_code == 401
    throttled = client.post("/auth/login", json={"username": user.username, "password": user.password})
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0


def test_registration_switched_off_answers_403(open_client):
    response = open_client.post("/auth/register", json={"username": unique_name(), "password": "secret1"})
    assert response.status_code == 403
    assert response.json() == {"detail": "当前不允许用户注册"}


def test_with_auth_disabled_every_request_acts_as_the_default_admin(open_client):
    response = open_client.get("/auth/me")
    assert response.status_code == 200
    assert response.json()["username"] == "admin" and response.json()["is_admin"] is True
    assert open_client.get("/auth/users").status_code == 200


def test_security_headers_are_set(client):
    response = client.get("/health")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_accept_language_en_gets_english_error_details(client, user):
    english = {"Accept-Language": "en-US,en;q=0.9"}
    assert client.get("/auth/me", headers=english).json() == {"detail": "Invalid authentication credentials"}
    missing = client.get("/tasks/00000000-0000-0000-0000-000000000000", headers={**user.headers, **english})
    assert missing.json() == {"detail": "Task not found"}
    bad = client.post("/text-to-image", headers={**user.headers, **english}, data={"prompt": "x", "num_images": "9"})
    assert bad.status_code == 400 and bad.json()["detail"] == "Parameter num_images must be less than or equal to 4"
    ratio = client.post(
        "/text-to-image", headers={**user.headers, **english}, data={"prompt": "x", "aspect_ratio": "5x4"}
    )
    assert ratio.json()["detail"].startswith("Unsupported aspect ratio 5x4; choose one of: 1:1")
    assert client.get("/auth/me").json() == {"detail": "无效的认证凭据"}  # Chinese stays the default

"""Browser sessions (POST/DELETE /auth/session): an HttpOnly SameSite=Strict cookie that the auth
dependency accepts after the bearer, with the CSRF header on changes — against the real service."""

from __future__ import annotations

import httpx

from tests.conftest import bearer, login

CSRF = {"X-Requested-With": "qwen-image"}


def browser(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=60)


def test_session_sets_an_httponly_strict_cookie_and_answers_the_user(base_url, user):
    with browser(base_url) as b:
        response = b.post("/auth/session", json={"username": user.username, "password": user.password})
        assert response.status_code == 200, response.text
        assert response.json()["username"] == user.username and "access_token" not in response.json()
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("qis_session=")
        lowered = cookie.lower()
        assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
        assert "secure" not in lowered  # plain http here; Secure is added over https
        me = b.get("/auth/me")
        assert me.status_code == 200 and me.json()["id"] == user.id


def test_session_login_has_the_same_checks_as_login(base_url, user):
    with browser(base_url) as b:
        response = b.post("/auth/session", json={"username": user.username, "password": "wrong-one"})
        assert response.status_code == 401 and response.json() == {"detail": "用户名或密码错误"}
        assert "set-cookie" not in response.headers
        assert b.get("/auth/me").status_code == 401


def test_cookie_changes_need_the_csrf_header(faulty_client, faulty_user):
    # On /faulty (sleep steps): the accepted task is not waited for, and a tiny-pipeline one would
    # run on into the next tests.
    user = faulty_user
    with browser(str(faulty_client.base_url).rstrip("/")) as b:
        b.post("/auth/session", json={"username": user.username, "password": user.password})
        form = {"prompt": "a cat", "num_inference_steps": "20", "aspect_ratio": "1:1"}
        refused = b.post("/text-to-image", data=form)
        assert refused.status_code == 403 and "X-Requested-With" in refused.json()["detail"]
        english = b.post("/text-to-image", data=form, headers={"Accept-Language": "en"})
        assert english.json()["detail"].startswith("Requests that change state")
        accepted = b.post("/text-to-image", data=form, headers=CSRF)
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        assert b.get(f"/tasks/{task_id}").status_code == 200  # reads need no header


def test_bearer_is_checked_before_the_cookie(base_url, client, user, make_user):
    other = make_user()
    with browser(base_url) as b:
        b.post("/auth/session", json={"username": user.username, "password": user.password})
        assert b.get("/auth/me", headers=bearer(login(client, other.username, other.password))).json()["id"] == other.id
        assert b.get("/auth/me", headers=bearer("not-a-token")).status_code == 401


def test_logout_clears_the_cookie(base_url, user):
    with browser(base_url) as b:
        b.post("/auth/session", json={"username": user.username, "password": user.password})
        out = b.delete("/auth/session")
        assert out.status_code == 200
        assert "qis_session=" in out.headers["set-cookie"] and "max-age=0" in out.headers["set-cookie"].lower()
        assert b.get("/auth/me").status_code == 401


def test_a_forged_cookie_is_401(base_url):
    with browser(base_url) as b:
        b.cookies.set("qis_session", "forged")
        response = b.get("/auth/me")
        assert response.status_code == 401 and response.json() == {"detail": "无效的认证凭据"}


def test_get_session_says_who_is_logged_in_without_an_error(base_url, user):
    with browser(base_url) as b:
        anonymous = b.get("/auth/session")
        assert anonymous.status_code == 200 and anonymous.json()["user"] is None
        b.post("/auth/session", json={"username": user.username, "password": user.password})
        assert b.get("/auth/session").json()["user"]["username"] == user.username
    with browser(base_url) as forged:
        forged.cookies.set("qis_session", "forged")
        assert forged.get("/auth/session").json()["user"] is None

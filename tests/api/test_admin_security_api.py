"""``GET /admin/security``: the admin page's warning that the administrator still has the default
password, against the real service (whose admin here keeps ``admin123``)."""

from __future__ import annotations


def test_the_admin_is_told_the_default_password_is_still_set(client, admin_headers):
    answer = client.get("/admin/security", headers=admin_headers)
    assert answer.status_code == 200
    assert answer.json() == {"admin_username": "admin", "default_admin_password": True}


def test_only_an_administrator_may_ask(client, user):
    assert client.get("/admin/security", headers=user.headers).status_code == 403
    assert client.get("/admin/security").status_code == 401

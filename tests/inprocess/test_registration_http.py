"""Registration and log-in per client address, and registration switched off at run time, through
the real app over a real SQLite file (no Ray)."""

from __future__ import annotations

import pytest

from tests.inprocess.conftest import login, make_client, register

pytestmark = pytest.mark.unit


def _register(client, name: str):
    return client.post("/auth/register", json={"username": name, "password": "secret-pass-1"})


def test_many_registrations_from_one_address_are_refused_with_429_and_retry_after(tmp_path):
    # Before: every registration from one address was accepted (no limit at all).
    with make_client(tmp_path, register_max_per_address=5, register_window_seconds=3600) as client:
        answers = [_register(client, f"sock{i}").status_code for i in range(8)]
        assert answers == [201] * 5 + [429] * 3
        refused = client.post(
            "/auth/register",
            json={"username": "sock9", "password": "secret-pass-1"},
            headers={"Accept-Language": "en"},
        )
        assert refused.status_code == 429 and "registrations from this address" in refused.json()["detail"]
        assert 3500 < int(refused.headers["Retry-After"]) <= 3600
        assert client.post("/auth/login", json={"username": "sock9", "password": "secret-pass-1"}).status_code == 401


def test_many_log_ins_from_one_address_are_refused_with_429_and_retry_after(tmp_path):
    with make_client(tmp_path, login_max_per_address=4, login_rate_window_seconds=60) as client:
        body = {"username": "admin", "password": "admin123"}
        answers = [client.post("/auth/login", json=body).status_code for _ in range(6)]
        assert answers == [200] * 4 + [429] * 2
        refused = client.post("/auth/session", json=body, headers={"Accept-Language": "en"})
        assert refused.status_code == 429 and "log-ins from this address" in refused.json()["detail"]
        assert 0 < int(refused.headers["Retry-After"]) <= 60


def test_an_admin_closes_registration_for_every_replica_until_reopened(tmp_path):
    with make_client(tmp_path) as client, make_client(tmp_path) as other_replica:
        admin = login(client, "admin", "admin123")
        alice = register(client, "alice")
        assert client.get("/admin/registration", headers=admin).json() == {"open": True}
        assert client.put("/admin/registration", headers=alice, json={"open": False}).status_code == 403
        assert client.put("/admin/registration", headers=admin, json={"open": "later"}).status_code == 400
        closed = client.put("/admin/registration", headers=admin, json={"open": False})
        assert closed.status_code == 200 and closed.json() == {"open": False}
        for app in (client, other_replica):
            refused = _register(app, "mallory")
            assert refused.status_code == 403 and refused.json() == {"detail": "当前不允许用户注册"}
            assert app.get("/auth/session").json()["allow_registration"] is False
        assert client.put("/admin/registration", headers=admin, json={"open": True}).json() == {"open": True}
        assert _register(other_replica, "mallory").status_code == 201
    with make_client(tmp_path, allow_registration=True) as restarted:  # the database's choice outlives a restart
        admin = login(restarted, "admin", "admin123")
        restarted.put("/admin/registration", headers=admin, json={"open": False})
    with make_client(tmp_path, allow_registration=True) as restarted:
        assert _register(restarted, "trudy").status_code == 403

"""No secret (password, token, API key, JWT secret) reaches any log of the running service, the
structured task events (JSON lines with task, user, kind, event and replica) included.

The requests go to ``/faulty`` (the session's sleep-profile app, auth on): the same ingress,
registry and model replica code logs them, and every application's logs are scanned; the task's
steps need not be tiny-pipeline steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import ray

from tests.api.helpers import submit_t2i, wait_status
from tests.conftest import bearer, login, unique_name, wait_for

SECRET_FIELD_NAMES = {
    "password",
    "new_password",
    "old_password",
    "token",
    "access_token",
    "authorization",
    "api_key",
    "secret",
    "jwt_secret",
}


def _logs_dir() -> Path:
    return Path(ray._private.worker._global_node.get_logs_dir_path())


def test_passwords_tokens_and_the_jwt_secret_never_appear_in_logs(faulty_client, data_root):
    client = faulty_client
    name, password = unique_name("secretive"), "Pa55-" + unique_name("pw")
    assert client.post("/auth/register", json={"username": name, "password": password}).status_code == 201
    token = login(client, name, password)
    client.get("/auth/me", headers=bearer(token))
    # A task of this user: its events are logged by the ingress, the registry and a model replica.
    task_id = submit_t2i(client, bearer(token), num_inference_steps=20)
    assert wait_status(client, bearer(token), task_id)["status"] == "completed"
    api_key = client.post("/auth/api-keys", headers=bearer(token), json={"name": "logs"}).json()
    client.get("/v1/models", headers=bearer(api_key["key"]))
    client.delete(f"/auth/api-keys/{api_key['id']}", headers=bearer(token))
    client.get("/v1/models", headers=bearer(api_key["key"]))  # revoked: a 401 that must not log the key
    client.post("/auth/login", json={"username": name, "password": password + "-wrong"})
    client.post(
        "/auth/change-password", headers=bearer(token), json={"old_password": password, "new_password": password + "-2"}
    )
    client.get("/auth/me", headers=bearer(token))  # now revoked: a 401 that must not log the token
    # A last task, after all of that: once its events are in the log files (the ingress, the registry
    # and a replica each write their own, in order), so is whatever those requests logged before it.
    last_id = submit_t2i(client, bearer(login(client, name, password + "-2")), num_inference_steps=20)
    jwt_secret = (data_root / "faulty" / "jwt_secret").read_text().strip()
    secrets = {
        "password": password,
        "new password": password + "-2",
        "token": token,
        "token signature": token.rsplit(".", 1)[-1],
        "jwt secret": jwt_secret,
        "api key": api_key["key"],
        "api key secret part": api_key["key"][12:],
    }

    def events_of(task: str) -> list[dict]:
        found = []
        for path in (p for p in _logs_dir().rglob("*") if p.is_file()):
            text = path.read_bytes().decode("utf-8", "replace")
            found += [json.loads(line) for line in text.splitlines() if line.startswith("{") and task in line]
        return found

    # The workers write their log files on their own time: the scan starts once the last task's events
    # are all there.
    wanted = {"submitted", "queued", "started", "completed", "generation_finished"}
    wait_for(
        lambda: wanted <= {e.get("event") for e in events_of(last_id)},
        timeout=60,
        interval=0.5,
        what=f"the last task's events {sorted(wanted)} in the log files",
    )
    events = events_of(task_id)
    files = [p for p in _logs_dir().rglob("*") if p.is_file()]
    assert files, "no Ray log files found"
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        for what, value in secrets.items():
            assert value not in text, f"{what} found in {path.name}"
    # The scan covered the first task's structured events, and none has a field for a credential.
    assert wanted <= {e.get("event") for e in events}
    for event in events:
        assert not SECRET_FIELD_NAMES & {key.lower() for key in event}, event

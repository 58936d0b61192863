"""``python -m serving`` (what ``make run`` starts) as a real process: Ctrl-C, restart, persistence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.conftest import ADDRESS_LIMITS_ENV, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
RAY_DAEMONS = ("raylet", "gcs_server")


def _ray_daemons() -> set[int]:
    found = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        except psutil.Error:
            continue
        if any(d in text for d in RAY_DAEMONS):
            found.add(proc.pid)
    return found


def _start(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(
        PORT=str(port),
        DATA_DIR=str(data_dir),
        MODEL_PROFILE="sleep",
        SLEEP_SECONDS_PER_STEP="0.05",
        PASSWORD_HASH_PROFILE="cheapest",
        **ADDRESS_LIMITS_ENV,
        CLEANUP_INTERVAL_SECONDS="0",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "serving"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/health", timeout=3).json()["status"] == "healthy"
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_ctrl_c_stops_cleanly_and_a_restart_keeps_users_tokens_results_and_pending_tasks(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemons_before = _ray_daemons()
    proc = _start(tmp_path, port)
    try:
        wait_for(lambda: _healthy(base), timeout=120, interval=0.5, what="service start")
        client = httpx.Client(base_url=base, timeout=30)
        assert client.post("/auth/register", json={"username": "carol", "password": "carol-pw"}).status_code == 201
        token = client.post("/auth/login", json={"username": "carol", "password": "carol-pw"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        first = client.post(
            "/text-to-image", headers=headers, data={"prompt": "a", "num_inference_steps": "20", "async_mode": "false"}
        )
        assert first.status_code == 200
        first_id = first.headers["x-task-id"]
        queued = [
            client.post(
                "/text-to-image", headers=headers, data={"prompt": f"q{i}", "num_inference_steps": "60"}
            ).json()["task_id"]
            for i in range(4)
        ]
    finally:
        code = _stop(proc)
    assert code == 0
    # Exited processes can linger a moment in the process table: waited for, up to 30 s.
    wait_for(
        lambda: not (_ray_daemons() - daemons_before),
        timeout=30,
        interval=0.5,
        what="the Ray processes the service started to be gone after Ctrl-C",
    )
    assert (tmp_path / "jwt_secret").exists()
    wal = tmp_path / "qwen_image.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "the write-ahead log was not folded back on shutdown"

    proc = _start(tmp_path, port)
    try:
        wait_for(lambda: _healthy(base), timeout=120, interval=0.5, what="service restart")
        client = httpx.Client(base_url=base, timeout=30)
        assert client.get("/auth/me", headers=headers).json()["username"] == "carol"  # same JWT secret
        again = client.get(f"/tasks/{first_id}/result", headers=headers)
        assert again.status_code == 200 and again.content == first.content
        for task_id in queued:
            final = client.get(f"/tasks/{task_id}/result", headers=headers, params={"wait": "true", "timeout": "60"})
            assert final.status_code == 200, (task_id, final.text)
        history = client.get("/tasks/history/me", headers=headers).json()
        assert history["total"] == 5 and {i["status"] for i in history["items"]} == {"completed"}
    finally:
        assert _stop(proc) == 0

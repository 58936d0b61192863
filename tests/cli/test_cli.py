"""The ``qwen-image`` command against the real service (the session's Serve instance, tiny
profile), run as a subprocess the way a user or a script runs it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from models.aspect import edit_output_size
from models.tiny_adapter import build_tiny_lora
from tests.api.helpers import image_bytes, png_size, zip_pngs
from tests.conftest import bearer, login, unique_name, wait_for

COMMAND_TIMEOUT = 180


@pytest.fixture
def cli(base_url, user, tmp_path):
    """Runs ``qwen-image`` logged in as a fresh user, with its own config file."""
    env = {
        **os.environ,
        "QWEN_IMAGE_URL": base_url,
        "QWEN_IMAGE_CONFIG": str(tmp_path / "config.json"),
        "LANG": "C",
        "COLUMNS": "240",
    }
    env.pop("QWEN_IMAGE_API_KEY", None)

    def run(*args: str, input: str | None = None, check_rc: int | None = 0) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=env,
            cwd=tmp_path,
            input=input,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if check_rc is not None:
            assert done.returncode == check_rc, (done.returncode, done.stdout, done.stderr)
        return done

    run("login", "--username", user.username, "--password", user.password)
    run.env = env
    run.user = user
    run.dir = tmp_path
    return run


def test_login_saves_url_and_token_readable_by_the_owner_only(cli, base_url):
    path = Path(cli.env["QWEN_IMAGE_CONFIG"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["url"] == base_url and saved["token"]
    assert json.loads(cli("quota", "--json").stdout)["user_id"] == cli.user.id


def test_generate_with_a_progress_bar_to_a_file(cli):
    done = cli("generate", "a lighthouse at dusk", "-o", "lighthouse.png", "--steps", "20", "--seed", "7")
    assert png_size((cli.dir / "lighthouse.png").read_bytes()) == (1024, 1024)
    assert "100%" in done.stderr and "saved lighthouse.png (seed 7)" in done.stderr
    assert done.stdout == ""  # stdout stays for results


def test_generate_json_two_images_as_a_zip(cli):
    done = cli("--json", "generate", "two cats", "-n", "2", "--ratio", "16:9", "--steps", "20")
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed" and isinstance(summary["seed"], int)
    assert summary["generation_seconds"] > 0  # from the completed event: the pipelines' own time
    assert summary["media_type"] == "application/zip" and summary["file"].endswith(".zip")
    images = zip_pngs((cli.dir / summary["file"]).read_bytes())
    assert [png_size(i) for i in images] == [(1664, 928)] * 2
    status = json.loads(cli("status", summary["task_id"], "--json").stdout)
    assert status["status"] == "completed" and status["progress"]["percent"] == 100.0


def test_edit_and_batch(cli):
    (cli.dir / "in.png").write_bytes(image_bytes(size=(128, 128)))
    edit = json.loads(cli("edit", "in.png", "make it green", "--steps", "20", "-o", "edited.png", "--json").stdout)
    assert edit["status"] == "completed" and png_size((cli.dir / "edited.png").read_bytes())[0] > 0
    assert edit["generation_seconds"] > 0
    batch = json.loads(cli("batch", "in.png", "make it red|make it blue", "--steps", "20", "--json").stdout)
    assert len(zip_pngs((cli.dir / batch["file"]).read_bytes())) == 2
    again = cli("result", batch["task_id"], "-o", "again.zip", "--json")
    assert json.loads(again.stdout)["media_type"] == "application/zip"
    history = json.loads(cli("history", "--type", "batch_edit", "--json").stdout)
    assert [item["task_id"] for item in history["items"]] == [batch["task_id"]]
    table = cli("history", "--page-size", "5").stdout
    assert "make it red | make it blue" in table and "make it green" in table


def test_bad_arguments_exit_2_with_a_message(cli):
    bad_ratio = cli("generate", "x", "--ratio", "5:4", check_rc=2)
    assert "--ratio" in bad_ratio.stderr and "5:4" in bad_ratio.stderr
    bad_steps = cli("generate", "x", "--steps", "5", check_rc=2)
    assert "--steps" in bad_steps.stderr
    assert "IMAGE [IMAGE] PROMPT" in cli("edit", "only-a-prompt", check_rc=2).stderr


def test_service_refusals_have_their_own_exit_codes(cli, tmp_path):
    missing = cli("status", "no-such-task", check_rc=4)
    assert "Task not found" in missing.stderr
    as_json = json.loads(cli("status", "no-such-task", "--json", check_rc=4).stdout)
    assert as_json == {"error": "Task not found", "status": 404}
    (tmp_path / "bad.png").write_bytes(b"not an image")
    refused = cli("edit", "bad.png", "anything", check_rc=5)
    assert "cannot be decoded as an image" in refused.stderr
    unauthenticated = cli("--api-key", "not-a-token", "quota", check_rc=3)
    assert "Invalid authentication credentials" in unauthenticated.stderr
    unreachable = cli("--url", "http://127.0.0.1:9", "quota", check_rc=6)
    assert "cannot reach" in unreachable.stderr


def test_ctrl_c_asks_and_cancels_the_task(cli, client):
    token = login(client, cli.user.username, cli.user.password)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "generate", "a slow panorama", "--ratio", "16:9", "--steps", "100"],
        env=cli.env,
        cwd=cli.dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test runner started in the background may
        # pass SIGINT down ignored, and Python then keeps ignoring it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:

        def running_task():
            items = client.get("/tasks/history/me", params={"status": "running"}, headers=bearer(token)).json()["items"]
            return items[0]["task_id"] if items else None

        task_id = wait_for(running_task, timeout=120, interval=0.2, what="the task to run")
        time.sleep(0.5)  # the client is inside its progress loop by now
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate("y\n", timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (stdout, stderr)
    assert f"Cancel task {task_id}?" in stderr and "cancel" in stderr.splitlines()[-1]
    final = wait_for(
        lambda: (
            (s := client.get(f"/tasks/{task_id}", headers=bearer(token)).json())["status"]
            in ("cancelled", "completed", "failed")
            and s
        ),
        timeout=60,
        what="the task to end",
    )
    assert final["status"] == "cancelled"


def test_credentials_from_the_environment_win_over_the_file(cli, client, make_user):
    other = make_user()
    env = {**cli.env, "QWEN_IMAGE_API_KEY": login(client, other.username, other.password)}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "quota", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["user_id"] == other.id
    assert httpx.get(cli.env["QWEN_IMAGE_URL"] + "/health", timeout=10).status_code == 200


def test_img2img_inpaints_a_painted_mask_outpaints_and_edits_under_a_mask(cli):
    (cli.dir / "in.png").write_bytes(image_bytes(size=(128, 96)))
    mask = Image.new("L", (128, 96), 0)  # black keeps, white repaints
    mask.paste(255, (32, 24, 96, 72))
    mask.save(cli.dir / "mask.png")
    inpainted = json.loads(
        cli("img2img", "in.png", "a red door", "--mask", "mask.png", "--steps", "20", "-o", "door.png", "--json").stdout
    )
    assert inpainted["status"] == "completed"
    assert png_size((cli.dir / "door.png").read_bytes()) == edit_output_size(128, 96)
    status = json.loads(cli("status", inpainted["task_id"], "--json").stdout)
    assert status["task_type"] == "image_to_image" and status["status"] == "completed"

    wider = json.loads(
        cli(
            "img2img", "in.png", "more sea", "--extend-right", "64", "--extend-left", "64", "--steps", "20", "--json"
        ).stdout
    )
    assert png_size((cli.dir / wider["file"]).read_bytes()) == edit_output_size(256, 96)

    masked_edit = cli("edit", "in.png", "greener", "--mask", "mask.png", "--strength", "0.7", "--steps", "20")
    assert "saved" in masked_edit.stderr
    refused = cli("img2img", "in.png", "x", "--mask", "in.png", check_rc=5)  # opaque red: marks nothing
    assert "mask" in refused.stderr


def test_register_whoami_and_logout_end_the_token(base_url, tmp_path):
    env = {**os.environ, "QWEN_IMAGE_URL": base_url, "QWEN_IMAGE_CONFIG": str(tmp_path / "c.json"), "LANG": "C"}
    env.pop("QWEN_IMAGE_API_KEY", None)

    def run(*args: str, rc: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        assert done.returncode == rc, (done.returncode, done.stdout, done.stderr)
        return done

    assert "no credential" in run("whoami", rc=3).stderr
    name = unique_name("reg")
    registered = run("register", "-u", name, "-p", "a-long-secret")
    assert f"registered {name}" in registered.stderr and "logged in" in registered.stderr
    assert json.loads(run("whoami", "--json").stdout)["username"] == name
    assert run("whoami").stdout.startswith(f"{name} (user #") and "login token" in run("whoami").stdout
    token = json.loads((tmp_path / "c.json").read_text())["token"]
    assert "already" in run("register", "-u", name, "-p", "a-long-secret", rc=5).stderr.lower()

    assert f"logged out of {base_url}" in run("logout").stderr
    assert httpx.get(base_url + "/auth/me", headers=bearer(token), timeout=10).status_code == 401  # ended there
    assert json.loads((tmp_path / "c.json").read_text()) == {"url": base_url}
    assert "not logged in" in run("logout").stderr
    run("whoami", rc=3)


def test_login_with_a_wrong_password_says_so_without_sending_you_to_login(cli):
    done = cli("login", "-u", cli.user.username, "-p", "not-the-password", check_rc=3)
    assert "error (401)" in done.stderr and "qwen-image login" not in done.stderr


def test_size_fast_and_loras_reach_the_service(cli, client, admin_headers, tmp_path_factory):
    fast = json.loads(cli("generate", "a fast fox", "--size", "320x256", "--fast", "--json").stdout)
    assert png_size((cli.dir / fast["file"]).read_bytes()) == (320, 256)
    record = client.get(f"/tasks/history/{fast['task_id']}", headers=cli.user.headers).json()
    assert record["parameters"]["speed"] == "fast" and record["parameters"]["num_inference_steps"] == 4

    path = build_tiny_lora("text_to_image", str(tmp_path_factory.mktemp("cli-lora")), seed=5, strength=1.0)
    with open(path, "rb") as file:
        added = client.post(
            "/admin/loras",
            headers=admin_headers,
            data={"name": "cli-ink", "model": "text_to_image", "default_scale": "0.5"},
            files={"file": ("ink.safetensors", file, "application/octet-stream")},
        )
    assert added.status_code in (201, 409), added.text
    inked = json.loads(
        cli("generate", "an inked fox", "--lora", "cli-ink:0.8", "--steps", "20", "--size", "256x256", "--json").stdout
    )
    record = client.get(f"/tasks/history/{inked['task_id']}", headers=cli.user.headers).json()
    assert record["parameters"]["loras"] == [{"name": "cli-ink", "scale": 0.8}]
    unknown = cli("generate", "x", "--lora", "no-such-adapter", check_rc=5)
    assert "no-such-adapter" in unknown.stderr
    assert "--lora" in cli("generate", "x", *["--lora", "a"] * 4, check_rc=2).stderr
    assert "--size" in cli("generate", "x", "--size", "big", check_rc=2).stderr
    assert "--size" in cli("generate", "x", "--size", "512x512", "--ratio", "16:9", check_rc=2).stderr


def test_tables_fit_80_columns_with_short_ids_local_times_and_a_message_when_empty(cli):
    narrow = {"COLUMNS": "80"}
    cli.env.update(narrow)
    empty = cli("history")
    assert empty.stdout == "" and "no tasks yet" in empty.stderr
    assert "no tasks match" in cli("history", "--status", "failed").stderr
    assert "no API keys" in cli("keys", "list").stderr

    long_prompt = "a very long prompt about a lighthouse on a cliff at dusk with gulls and spray " * 3
    task = json.loads(cli("generate", long_prompt, "--steps", "20", "--size", "256x256", "--json").stdout)
    cli("keys", "create", "laptop")
    table = cli("history").stdout
    lines = table.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), table
    (row,) = [line for line in lines if task["task_id"][:8] in line]
    assert task["task_id"] not in row and "generate" in row and "completed" in row
    created = time.strftime("%Y-%m-%d", time.localtime())
    assert f" {created} " in row and row.split(created)[1][:9].count(":") == 2  # local time, to the second
    keys = cli("keys", "list").stdout
    assert "laptop" in keys and all(len(line) <= 80 for line in keys.splitlines())

    short = task["task_id"][:8]
    assert json.loads(cli("status", short, "--json").stdout)["task_id"] == task["task_id"]
    assert json.loads(cli("result", short, "-o", "again.png", "--json").stdout)["task_id"] == task["task_id"]
    assert "none of your tasks" in cli("status", "ffffffff", check_rc=4).stderr

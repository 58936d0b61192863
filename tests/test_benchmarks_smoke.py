"""The benchmark scripts run, so they cannot rot (figures are printed by `make bench`, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_pipeline_benchmark_runs_on_the_tiny_profile():
    done = subprocess.run(
        # One timed run per case after the warm-up: the timing loop and its figures run all the same.
        [sys.executable, "benchmarks/gpu_pipeline.py", "--tiny", "--steps", "2", "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "text-to-image" in done.stdout and "s/image" in done.stdout
    assert "edit, one 1024² input" in done.stdout


def test_gpu_pipeline_benchmark_runs_shared_layout_lora_fast_mode_and_step_cache_on_the_tiny_profile():
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_pipeline.py",
            "--tiny",
            "--steps",
            "2",
            "--runs",
            "0",
            "--only",
            "t2i",
            "--lora",
            "4",
            "--fast",
            "--cache",
            "taylorseer",
            "--layout",
            "shared",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "true CFG 1.0" in done.stdout and "lora: one random rank-4 adapter" in done.stdout
    assert "TaylorSeer" in done.stdout and "PSNR" in done.stdout and "SSIM" in done.stdout


def test_gpu_pipeline_benchmark_runs_qwen21_turbo_and_counts_its_full_size_parameters():
    def run(*arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "benchmarks/gpu_pipeline.py", "--profile", "qwen21", *arguments],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    counts = {line.split()[0]: float(line.split()[1]) for line in run("--check-configs").splitlines()}
    # Qwen-Image 2.1's ~7 B transformer and Qwen3-VL-8B's 8.77 B (published) on the meta device
    assert 7.0 < counts["transformer"] < 7.3 and 8.7 < counts["text_encoder"] < 8.85
    tiny = run("--tiny", "--fast", "--runs", "0", "--only", "t2i")
    assert "Qwen-Image 2.1 tiny profile: 1024x1024, 8 steps" in tiny and "s/image" in tiny


def test_benchmark_cli_lists_every_figure():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for figure in ("status", "submit", "overhead", "duty", "tiny", "scale", "autoscale", "memory", "openai"):
        assert figure in done.stdout


def test_registry_benchmark_runs_its_life_cycles_on_sqlite():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.registry", "--tasks", "40", "--history", "200", "--memory-tasks", "40"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for figure in (
        "life_cycles_per_s",
        "life_cycles_per_s_heavy_user",
        "status_reads_per_s",
        "gpus_fed_at_12s_per_image",
        "registry_rss_mib_above_idle",
    ):
        assert figure in done.stdout


def test_plain_comparison_server_answers_the_services_status_body(tmp_path):
    """The status figure compares the service with ``benchmarks.plain_server``: it must give the same body."""
    import uuid

    from fastapi.testclient import TestClient
    from sqlmodel import Session

    from auth.security import load_or_create_secret
    from auth.service import AuthConfig, AuthService
    from benchmarks.plain_server import create_app
    from serving.routes.tasks import status_from_record
    from storage import TaskRecord, init_db, make_engine, utcnow
    from storage.db import sqlite_url
    from storage.tables import User

    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    auth = AuthService(engine, load_or_create_secret(tmp_path), AuthConfig(hash_profile="cheapest"))
    with Session(engine, expire_on_commit=False) as session:
        user = User(username="plain", hashed_password=auth.passwords.hash("a long password"))
        session.add(user)
        session.commit()
        record = TaskRecord(
            task_id=str(uuid.uuid4()),
            user_id=user.id,
            task_type="text_to_image",
            prompt="a cat",
            status="completed",
            parameters={"num_inference_steps": 4},
            created_at=utcnow(),
            completed_at=utcnow(),
            execution_time=1.25,
        )
        session.add(record)
        session.commit()
        token = auth.tokens.issue(user.id, user.token_version, key=user.token_key)
    client = TestClient(create_app(tmp_path))
    answer = client.get(f"/tasks/{record.task_id}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    expected = status_from_record(record).model_dump(mode="json")
    assert answer.json() == expected
    assert client.get(f"/tasks/{record.task_id}", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_device_gaps_split_the_idle_time_from_the_replicas_own_clock():
    from benchmarks.figures import device_gaps

    turns = [
        {"arrived": 0.0, "at_lock": 0.0, "acquired": 0.0, "thread_done": 1.0, "released": 1.002},
        # waited at the lock before the first ended: idle 3 ms, not late
        {"arrived": 0.1, "at_lock": 0.1, "acquired": 1.003, "thread_done": 2.003, "released": 2.004},
        # reached the lock 50 ms after the device was done: the router was late
        {"arrived": 2.05, "at_lock": 2.053, "acquired": 2.054, "thread_done": 3.0, "released": 3.0},
    ]
    gaps = device_gaps(turns)
    assert [round(g, 3) for g in gaps["device_idle"]] == [0.003, 0.051]
    assert [round(g, 3) for g in gaps["device_done_to_released"]] == [0.002, 0.001]
    assert [round(g, 3) for g in gaps["device_late"]] == [-0.9, 0.05]
    assert [round(g, 3) for g in gaps["device_generation"]] == [1.0, 1.0, 0.946]

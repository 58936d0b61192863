"""The benchmark scripts run, so they cannot rot (figures are printed by `make bench`, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_pipeline_benchmark_runs_on_the_tiny_profile():
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_pipeline.py", "--tiny", "--steps", "2"],
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

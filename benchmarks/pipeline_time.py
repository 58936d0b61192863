"""Pipeline time measured in-process, outside the service (run as its own process).

Two uses:

``service-request``
    The pipeline's own time for the request the benchmarks send over HTTP (same profile, prompt,
    negative prompt, seed, steps, CFG and size): the duty-cycle figure's pipeline time. Torch
    keeps its default thread count; ``--threads`` overrides.

``tiny-cases``
    ``benchmarks/tiny_pipeline.py``'s three cases (text-to-image, edit with one and with two
    1024x1024 inputs) through its own functions, with a chosen step count and number of runs
    (``--runs 0``: one run each without warm-up): the quick variant of the tiny-pipeline figure.
    The full figure runs ``tiny_pipeline.py`` itself.

Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The request the overhead figure submits (see benchmarks.service.App.submit).
SERVICE_PROMPT = "a lighthouse at dusk"
SERVICE_NEGATIVE = "blurry"


def _service_model(profile_name: str, steps: int, cache_dir: Optional[str], sleep_seconds_per_step: float):
    from models import TEXT_TO_IMAGE, GenerationRequest, generate, get_profile, load

    profile = get_profile(profile_name, cache_dir=cache_dir, sleep_seconds_per_step=sleep_seconds_per_step)
    model = load(profile, TEXT_TO_IMAGE)
    request = GenerationRequest(
        prompt=SERVICE_PROMPT,
        negative_prompt=SERVICE_NEGATIVE,
        width=1024,
        height=1024,
        num_inference_steps=steps,
        true_cfg_scale=4.0,
        seed=1,
    )
    generate(model, request)  # warm-up

    def once() -> float:
        started = time.perf_counter()
        generate(model, request)
        return time.perf_counter() - started

    return once


def service_request(
    profile_name: str, runs: int, steps: int, cache_dir: Optional[str], sleep_seconds_per_step: float
) -> dict:
    once = _service_model(profile_name, steps, cache_dir, sleep_seconds_per_step)
    seconds = [once() for _ in range(runs)]
    return {"seconds": seconds, "threads": _threads(), "profile": profile_name, "steps": steps}


def tiny_cases(runs: int, steps: int, cache_dir: Optional[str]) -> dict:
    from benchmarks import tiny_pipeline as tp

    profile = tp.get_profile("tiny", cache_dir=cache_dir)
    text_to_image = tp.load(profile, tp.TEXT_TO_IMAGE)
    image_edit = tp.load(profile, tp.IMAGE_EDIT)
    common = dict(
        prompt=tp.PROMPT, negative_prompt=tp.NEGATIVE_PROMPT, num_inference_steps=steps, true_cfg_scale=4.0, seed=1
    )
    red, blue = tp.input_image((200, 60, 40)), tp.input_image((40, 90, 200))
    cases = {
        "tiny_t2i_1024_s": (text_to_image, tp.GenerationRequest(width=1024, height=1024, **common)),
        "tiny_edit_1img_s": (image_edit, tp.GenerationRequest(images=[red], **common)),
        "tiny_edit_2img_s": (image_edit, tp.GenerationRequest(images=[red, blue], **common)),
    }
    if runs > 0:
        out = {name: tp.median_seconds(model, request, runs) for name, (model, request) in cases.items()}
    else:  # one run each, no warm-up: a smoke test of the code path, not a figure
        out = {name: tp.generate(model, request).seconds for name, (model, request) in cases.items()}
    return {**out, "threads": _threads(), "steps": steps, "runs": runs}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_time", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["service-request", "tiny-cases"])
    parser.add_argument("--profile", default="tiny", choices=["tiny", "sleep"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own default)")
    parser.add_argument("--cache-dir", help="tiny profile cache dir (default: the profile's)")
    parser.add_argument("--sleep-seconds-per-step", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["TORCH_NUM_THREADS"] = str(args.threads)
    if args.what == "service-request":
        result = service_request(args.profile, args.runs, args.steps, args.cache_dir, args.sleep_seconds_per_step)
    else:
        result = tiny_cases(args.runs, args.steps, args.cache_dir)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

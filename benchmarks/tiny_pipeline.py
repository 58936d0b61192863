"""Seconds per 1024x1024 image on the tiny profile: text-to-image, edit with one and two inputs.

Each case runs 20 steps with true CFG 4.0 and a negative prompt, once to warm up and then
``--runs`` times; the median is reported. Torch uses its default thread count unless
``TORCH_NUM_THREADS`` is set.

    python benchmarks/tiny_pipeline.py [--runs 3] [--json PATH] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# Run as a script from anywhere: make the repository's packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from models import IMAGE_EDIT, TEXT_TO_IMAGE, GenerationRequest, generate, get_profile, load

STEPS = 20
PROMPT = "a lighthouse on a cliff at dusk, waves, dramatic sky"
NEGATIVE_PROMPT = "blurry, low quality"


def input_image(colour: tuple[int, int, int]) -> Image.Image:
    """A 1024x1024 input, so that edit output is 1024x1024 as well."""
    return Image.new("RGB", (1024, 1024), colour)


def median_seconds(model, request: GenerationRequest, runs: int) -> float:
    """Median wall time of ``runs`` generations after one warm-up run."""
    generate(model, request)
    times = []
    for _ in range(runs):
        result = generate(model, request)
        assert result.images[0].size == (1024, 1024), result.images[0].size
        times.append(result.seconds)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case after one warm-up (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--cache-dir", help="where the tiny components are built (default: the profile's)")
    args = parser.parse_args()

    import torch

    profile = get_profile("tiny", cache_dir=args.cache_dir)
    started = time.perf_counter()
    text_to_image = load(profile, TEXT_TO_IMAGE)
    image_edit = load(profile, IMAGE_EDIT)
    seconds = time.perf_counter() - started
    print(f"loaded both tiny pipelines in {seconds:.1f} s; torch threads: {torch.get_num_threads()}")

    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, true_cfg_scale=4.0, seed=1)
    cases = {
        "tiny_t2i_1024_s": (text_to_image, GenerationRequest(width=1024, height=1024, **common)),
        "tiny_edit_1img_s": (image_edit, GenerationRequest(images=[input_image((200, 60, 40))], **common)),
        "tiny_edit_2img_s": (
            image_edit,
            GenerationRequest(images=[input_image((200, 60, 40)), input_image((40, 90, 200))], **common),
        ),
    }
    results = {}
    for name, (model, request) in cases.items():
        results[name] = round(median_seconds(model, request, args.runs), 3)
        print(f"{name}: {results[name]:.3f} s (median of {args.runs}, {STEPS} steps, true CFG 4.0)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

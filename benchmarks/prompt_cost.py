"""What the prompt-embedding cache (models.prompt_cache) saves on the tiny profile: the text
encoder's time for a prompt and the negative prompt against a whole 1024², 20-step generation with
true CFG, and a generation with both prompts cached.

    python -m benchmarks.prompt_cost [--runs 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from models import TEXT_TO_IMAGE, GenerationRequest, generate, get_profile, load
    from models.profiles import default_tiny_cache_dir

    model = load(get_profile("tiny", cache_dir=default_tiny_cache_dir()), TEXT_TO_IMAGE)
    pipeline, cache = model.pipeline, model.prompt_cache
    device = pipeline._execution_device
    encode = []
    for n in range(args.runs + 1):
        started = time.perf_counter()
        pipeline.encode_prompt(prompt=f"a lighthouse at dusk {n}", device=device)
        pipeline.encode_prompt(prompt="blurry", device=device)
        encode.append(time.perf_counter() - started)

    def request() -> GenerationRequest:
        return GenerationRequest(
            prompt="a lighthouse at dusk", negative_prompt="blurry", width=1024, height=1024, num_inference_steps=20
        )

    uncached, cached = [], []
    for _ in range(args.runs):  # interleaved: both meet the same machine
        cache.max_bytes, cache._entries, cache.bytes = 0, type(cache._entries)(), 0
        uncached.append(generate(model, request()).seconds)  # the first install sees 0 bytes: stays off
        cache.max_bytes = 64 * 2**20
        cache.install(pipeline)
        generate(model, request())  # fills it
        cached.append(generate(model, request()).seconds)
        pipeline._get_qwen_prompt_embeds = type(pipeline)._get_qwen_prompt_embeds.__get__(pipeline)
        pipeline._prompt_cache = None
    result = {
        "encode_prompt_and_negative_p50_ms": 1000 * statistics.median(encode[1:]),
        "generation_uncached_p50_s": statistics.median(uncached),
        "generation_cached_p50_s": statistics.median(cached),
    }
    result["encode_fraction_of_generation"] = (
        result["encode_prompt_and_negative_p50_ms"] / 1000 / result["generation_uncached_p50_s"]
    )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

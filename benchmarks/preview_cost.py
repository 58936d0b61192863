"""``python -m benchmarks.preview_cost``: what live previews cost a tiny-profile generation.

Two measurements on a 1024x1024 text-to-image run (20 steps, true CFG):

- ``critical``: the time the step callback spends on a preview (projection and the start of the
  copy; encoding runs on another thread), timed directly on latents of that size;
- ``step``: the mean step time of whole runs with a preview every step against none (on a CPU the
  encoder thread competes with the pipeline for the same cores, which the first figure leaves out);
- ``partial``: a /v1 stream's partial image (models.preview.PartialDecoder): one VAE decode of the
  latents at the full 1024x1024 on the critical path, and the whole run with the most OpenAI allows
  (3) against none.

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import time

import torch

from models import GenerationRequest, PreviewOptions, generate, get_profile, load
from models.preview import LatentPreviewer, decode_packed


def step_times(model, request: GenerationRequest, previews) -> list[float]:
    stamps: list[float] = []
    generate(model, request, on_step=lambda step, total: stamps.append(time.perf_counter()), previews=previews)
    return [b - a for a, b in itertools.pairwise(stamps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cache-dir")
    args = parser.parse_args()
    model = load(get_profile("tiny", cache_dir=args.cache_dir), "text_to_image")
    rgb_map = model.preview_map()

    # The callback's own share, on packed latents of a 1024x1024 image (64x64 tokens).
    channels = rgb_map.channels
    latents = torch.randn(1, 64 * 64, channels * 4)
    made: list[dict] = []
    previewer = LatentPreviewer(rgb_map, width=1024, height=1024, every=1, sink=made.append)
    for step in range(1, 41):
        previewer.on_step(step, 1000, latents)
        previewer._encoder.submit(lambda: None).result()  # let the encoder finish, so none is skipped
    previewer.close()
    critical_ms = [s * 1000 for s in previewer.critical_seconds[5:]]
    sizes = [len(p["b64"]) * 3 // 4 for p in made]

    request = GenerationRequest(
        prompt="a lighthouse at dusk", negative_prompt="blurry", width=1024, height=1024, num_inference_steps=20, seed=1
    )
    generate(model, request)  # warm-up
    plain, with_previews = [], []
    for _ in range(args.runs):
        plain += step_times(model, request, None)
        with_previews += step_times(model, request, PreviewOptions(every=1, sink=lambda p: None))
    step_ms = statistics.median(plain) * 1000

    # A partial image: a real VAE decode at full size, at most 3 a run (OpenAI's partial_images).
    vae = model.pipeline.vae
    decode_ms = []
    for _ in range(5):
        started = time.perf_counter()
        decode_packed(vae, latents, 1024, 1024)
        decode_ms.append((time.perf_counter() - started) * 1000)
    run_plain, run_partials = [], []
    partials = dataclasses.replace(request, partial_images=3)
    for _ in range(args.runs):
        started = time.perf_counter()
        generate(model, request)
        run_plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        generate(model, partials, previews=PreviewOptions(every=0, sink=lambda p: None))
        run_partials.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "preview_critical_path_ms": statistics.median(critical_ms),
                "preview_critical_path_pct_of_step": 100 * statistics.median(critical_ms) / step_ms,
                "step_ms": step_ms,
                "step_ms_with_preview_every_step": statistics.median(with_previews) * 1000,
                "preview_bytes_median": statistics.median(sizes) if sizes else None,
                "preview_size": [made[0]["width"], made[0]["height"]] if made else None,
                "latent_rgb_map": rgb_map.source,
                "partial_decode_ms": statistics.median(decode_ms[1:]),
                "partial_decode_pct_of_step": 100 * statistics.median(decode_ms[1:]) / step_ms,
                "run_s": statistics.median(run_plain),
                "run_s_with_3_partials": statistics.median(run_partials),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()

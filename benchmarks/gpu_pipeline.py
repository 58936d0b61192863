"""Seconds per 1024x1024 image of the real Qwen-Image architecture (random weights) on a GPU.

Builds Qwen-Image at its published size from configuration objects written below: the
QwenImageTransformer2DModel (60 layers, 24 heads x 128, ~20 B parameters), the
AutoencoderKLQwenImage and the Qwen2.5-VL-7B text encoder (vision tower included), with random
weights created directly on the GPU in bfloat16 (nothing is downloaded, nothing is initialised on
the CPU). The tokenizer and the edit pipeline's image processor are the tiny profile's (built in
code; token ids fit the real vocabulary size). Then it times, with true CFG (a non-empty
negative prompt) and the requested number of steps:

  * text-to-image at 1024x1024 (QwenImagePipeline)
  * edit with one 1024x1024 input (QwenImageEditPlusPipeline, the transformer in the edit
    model's zero_cond_t mode)

and prints seconds per image, seconds per step and peak GPU memory. Random weights make the
images noise (and their values may overflow); the work per step is the real model's.

    python benchmarks/gpu_pipeline.py                        # 50 steps, bf16, SDPA attention
    python benchmarks/gpu_pipeline.py --compile --attention _flash_3 --fp8 --cache
    python benchmarks/gpu_pipeline.py --fast                 # Lightning mode: 4 steps, CFG off, its scheduler
    python benchmarks/gpu_pipeline.py --lora 64 --cache taylorseer --compile regional
    python benchmarks/gpu_pipeline.py --tiny --steps 2       # the same code on the CPU, tiny profile
    python benchmarks/gpu_pipeline.py --check-configs        # parameter counts only (meta device, any machine)
    python benchmarks/gpu_pipeline.py --profile qwen21       # Qwen-Image 2.1: 40 steps, no CFG, one pipeline
    python benchmarks/gpu_pipeline.py --profile qwen21 --fast            # its Turbo grid: 8 steps, no CFG
    python benchmarks/gpu_pipeline.py --profile qwen21 --check-configs   # 2.1's parameter counts

With ``--profile qwen21`` the model is Qwen-Image 2.1 at its published size: QwenImage21Transformer2DModel
and AutoencoderKLQwenImage21 with diffusers' default configurations (the published ones: 32 layers,
32 heads x 128, a 64-channel VAE) and a Qwen3-VL-8B text encoder (vision tower included), random
weights; one QwenImage21Pipeline runs both cases (the edit with one 1024x1024 reference).

Reference points (published, one H100, 1024x1024, 50 steps, CFG): plain diffusers 18.5-20 s
per text-to-image image; SGLang Diffusion 12.8 s (248 ms/step, 47 GB peak), 4.5 s with
cache-dit; the bf16 roofline is ~7 s (~137 TFLOP per CFG step).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "a lighthouse on a cliff at dusk, waves crashing below, dramatic clouds, golden light"
EDIT_PROMPT = "turn the scene into a snowy winter night"
NEGATIVE_PROMPT = "blurry, low quality, distorted"
SIZE = 1024

# ---------------------------------------------------------------------------------------------
# The published configurations of Qwen-Image (Qwen/Qwen-Image, Qwen/Qwen-Image-2512 and
# Qwen/Qwen-Image-Edit-2511 share the architecture; the edit transformer sets zero_cond_t).

TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}

VAE_CONFIG: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571,
        -0.7089,
        -0.9113,
        0.1075,
        -0.1745,
        0.9653,
        -0.1517,
        1.5508,
        0.4134,
        -0.0715,
        0.5517,
        -0.3632,
        -0.1922,
        -0.9497,
        0.2503,
        -0.2921,
    ],
    "latents_std": [
        2.8184,
        1.4541,
        2.3275,
        2.6558,
        1.2196,
        1.7708,
        2.6052,
        2.0743,
        3.2687,
        2.1526,
        2.8652,
        1.5579,
        1.6382,
        1.1253,
        2.8251,
        1.9160,
    ],
}

# Qwen2.5-VL-7B-Instruct
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
    "vocab_size": 152064,
    "tie_word_embeddings": False,
}

VISION_CONFIG: dict[str, Any] = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "hidden_act": "silu",
    "in_channels": 3,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}


# Qwen-Image 2.1 (Qwen/Qwen-Image-2.1): the transformer's and the VAE's published configurations
# are diffusers' defaults for these classes (context_in_dim 4096 is the text encoder's hidden size).
QWEN21_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "out_channels": 64,
    "num_layers": 32,
    "attention_head_dim": 128,
    "num_attention_heads": 32,
    "context_in_dim": 4096,
    "mlp_ratio": 3,
    "axes_dims_rope": (16, 56, 56),
    "causal_condition": True,
}
QWEN21_VAE_CONFIG: dict[str, Any] = {}  # AutoencoderKLQwenImage21's defaults: base_dim 96, z_dim 64, RGBA

# Qwen3-VL-8B-Instruct, the 2.1 pipeline's text encoder (Qwen3VLForConditionalGeneration)
QWEN3_VL_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
    "vocab_size": 151936,
    "tie_word_embeddings": False,
}
QWEN3_VL_VISION_CONFIG: dict[str, Any] = {
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_heads": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "in_channels": 3,
    "out_hidden_size": 4096,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [8, 16, 24],
}
QWEN21_STEPS = 40  # the model's default; no CFG


# ---------------------------------------------------------------------------------------------
# Building


@contextlib.contextmanager
def created_on(device: str, dtype):
    """Every tensor a constructor makes goes straight to ``device`` in ``dtype``: no CPU
    initialisation. (Not the meta device: modules that compute buffers in ``__init__``, such as
    the rotary embeddings, would lose them on ``to_empty``.)"""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_text_encoder(tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from models.tiny import vl_encoder_config

    config = vl_encoder_config(
        Qwen2_5_VLConfig, tokenizer, TEXT_CONFIG, VISION_CONFIG, vocab_size=TEXT_CONFIG["vocab_size"]
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def build_components(device: str, dtype) -> dict:
    """The full-size components on ``device`` (``meta`` to only count parameters)."""
    import copy

    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    from models.tiny import SCHEDULER_CONFIG, build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    with created_on(device, dtype):
        transformer = QwenImageTransformer2DModel(**copy.deepcopy(TRANSFORMER_CONFIG)).eval()
        vae = AutoencoderKLQwenImage(**copy.deepcopy(VAE_CONFIG)).eval()
        text_encoder = build_text_encoder(tokenizer)
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": FlowMatchEulerDiscreteScheduler(**copy.deepcopy(SCHEDULER_CONFIG)),
        "processor": build_processor(tokenizer),
    }


def build_qwen21_components(device: str, dtype) -> dict:
    """Qwen-Image 2.1's full-size components on ``device`` (``meta`` to only count parameters); the
    tokenizer and processor are the tiny 2.1 profile's (its token ids fit the real vocabulary)."""
    import copy

    from diffusers import (
        AutoencoderKLQwenImage21,
        FlowMatchEulerDiscreteScheduler,
        QwenImage21Transformer2DModel,
    )
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from models.tiny import build_tokenizer, vl_encoder_config
    from models.tiny21 import SCHEDULER_CONFIG, TEMPLATES, build_processor

    tokenizer = build_tokenizer(list(TEMPLATES))
    config = vl_encoder_config(
        Qwen3VLConfig,
        tokenizer,
        QWEN3_VL_TEXT_CONFIG,
        QWEN3_VL_VISION_CONFIG,
        vocab_size=QWEN3_VL_TEXT_CONFIG["vocab_size"],
    )
    with created_on(device, dtype):
        transformer = QwenImage21Transformer2DModel(**copy.deepcopy(QWEN21_TRANSFORMER_CONFIG)).eval()
        vae = AutoencoderKLQwenImage21(**copy.deepcopy(QWEN21_VAE_CONFIG)).eval()
        text_encoder = Qwen3VLForConditionalGeneration(config).eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "scheduler": FlowMatchEulerDiscreteScheduler(**copy.deepcopy(SCHEDULER_CONFIG)),
        "processor": build_processor(tokenizer),
    }


def build_qwen21_pipelines(device: Optional[str], tiny: bool = False):
    """One ``QwenImage21Pipeline`` for both cases: full size on ``device``, or the tiny 2.1 profile's."""
    if tiny:
        from models import TEXT_TO_IMAGE, get_profile
        from models.shared import load_shared

        pipe = load_shared(get_profile("tiny21"))[TEXT_TO_IMAGE].pipeline
    else:
        import torch
        from diffusers import QwenImage21Pipeline

        pipe = QwenImage21Pipeline(**build_qwen21_components(device or "cuda", torch.bfloat16))
    return pipe, pipe, lambda mode: None


def set_edit_mode(transformer, edit: bool) -> None:
    """Qwen-Image-Edit-2511's transformer differs from the text-to-image one only in
    ``zero_cond_t`` (input-image tokens get timestep 0): flip it on the one shared transformer
    (two 41 GB transformers would not fit beside the text encoder)."""
    transformer.zero_cond_t = edit
    for block in transformer.transformer_blocks:
        block.zero_cond_t = edit
    transformer.register_to_config(zero_cond_t=edit)


def build_full_pipelines(device: str, layout: str = "one-transformer"):
    """Both pipelines over one text encoder and VAE. ``one-transformer`` (the default) also shares
    the transformer, flipping its edit mode: each model's own footprint, as in the separate layout.
    ``shared`` gives the edit pipeline a transformer of its own: both models resident at once, as
    the service's shared layout holds them."""
    import copy

    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    from models.tiny import SCHEDULER_CONFIG

    c = build_components(device, torch.bfloat16)
    shared = {k: c[k] for k in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")}
    t2i = QwenImagePipeline(**shared)
    if layout == "shared":
        with created_on(device, torch.bfloat16):
            edit_transformer = QwenImageTransformer2DModel(**copy.deepcopy(TRANSFORMER_CONFIG), zero_cond_t=True).eval()
        edit = QwenImageEditPlusPipeline(
            processor=c["processor"],
            **{
                **shared,
                "transformer": edit_transformer,
                "scheduler": FlowMatchEulerDiscreteScheduler(**copy.deepcopy(SCHEDULER_CONFIG)),
            },
        )
        return t2i, edit, lambda mode: None
    edit = QwenImageEditPlusPipeline(processor=c["processor"], **shared)
    return t2i, edit, lambda mode: set_edit_mode(c["transformer"], mode == "edit")


def build_tiny_pipelines(layout: str = "one-transformer"):
    """The tiny profile's two pipelines (``models``), on the CPU; ``shared``: as the service's
    shared layout loads them."""
    from models import IMAGE_EDIT, TEXT_TO_IMAGE, get_profile, load
    from models.shared import load_shared

    profile = get_profile("tiny")
    if layout == "shared":
        models = load_shared(profile)
        return models[TEXT_TO_IMAGE].pipeline, models[IMAGE_EDIT].pipeline, lambda mode: None
    return load(profile, TEXT_TO_IMAGE).pipeline, load(profile, IMAGE_EDIT).pipeline, lambda mode: None


def parameter_counts(components: dict) -> dict[str, float]:
    """Billions of parameters per model component."""
    out = {}
    for name in ("transformer", "text_encoder", "vae"):
        out[name] = sum(p.numel() for p in components[name].parameters()) / 1e9
    vision = getattr(components["text_encoder"].model, "visual", None)
    if vision is not None:
        out["text_encoder.vision"] = sum(p.numel() for p in vision.parameters()) / 1e9
    return out


# ---------------------------------------------------------------------------------------------
# Options (applied to every distinct transformer: the full-size pipelines share one)


def transformers_of(pipes) -> list:
    seen: dict[int, Any] = {}
    for pipe in pipes:
        seen.setdefault(id(pipe.transformer), pipe.transformer)
    return list(seen.values())


def apply_attention(pipes, backend: Optional[str], notes: list[str]) -> None:
    if not backend or backend in ("sdpa", "native"):
        notes.append("attention: PyTorch SDPA (diffusers' default)")
        return
    if not all(hasattr(t, "set_attention_backend") for t in transformers_of(pipes)):
        notes.append(f"attention {backend}: unavailable (this diffusers has no set_attention_backend); using SDPA")
        return
    try:
        for transformer in transformers_of(pipes):
            transformer.set_attention_backend(backend)
        notes.append(f"attention: {backend}")
    except Exception as exc:  # a missing kernel package, an unsupported GPU
        notes.append(f"attention {backend}: unavailable ({type(exc).__name__}: {exc}); using SDPA")


def apply_fp8(pipes, device: str, notes: list[str]) -> None:
    if device == "cpu":
        notes.append("fp8: unavailable on the CPU (needs a CUDA GPU with FP8, e.g. H100)")
        return
    try:
        from torchao.quantization import quantize_
    except ImportError:
        notes.append("fp8: unavailable (torchao is not installed: pip install torchao)")
        return
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    except ImportError:
        from torchao.quantization import float8_dynamic_activation_float8_weight

        config = float8_dynamic_activation_float8_weight()
    for transformer in transformers_of(pipes):
        quantize_(transformer, config)
    notes.append("fp8: torchao float8 dynamic activations and weights (per row) on the transformer's linear layers")


def apply_offload(pipes, mode: Optional[str], device: str, notes: list[str]) -> None:
    """Model CPU offload (whole components moved in turn) or group offloading (block by block,
    prefetched on a CUDA stream), as the service's QUANTIZATION and OFFLOAD settings do."""
    if not mode:
        return
    if device == "cpu":
        notes.append(f"offload {mode}: not applicable on the CPU")
        return
    import torch

    done: set[int] = set()
    for pipe in pipes:
        if mode == "model":
            pipe.enable_model_cpu_offload(device=device)
        else:
            shared = [name for name in ("text_encoder", "vae") if id(getattr(pipe, name)) in done]
            pipe.enable_group_offload(
                onload_device=torch.device(device),
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=True,
                exclude_modules=shared or None,
            )
        done.update(id(getattr(pipe, name)) for name in ("text_encoder", "vae", "transformer"))
    notes.append(
        "offload: model CPU offload"
        if mode == "model"
        else "offload: group offloading, one block per group, CUDA stream prefetch"
    )


def apply_lora(pipes, rank: Optional[int], fast: bool, notes: list[str]) -> None:
    """A random LoRA of ``rank`` on every attention projection, active at scale 1 (``--lora``), and
    for ``--fast`` a rank-64 stand-in for the Lightning adapter plus its scheduler settings."""
    if not rank and not fast:
        return
    import torch
    from peft import LoraConfig

    from models.adapters import lightning_scheduler
    from models.tiny_adapter import TARGET_MODULES

    adapters = ([("user", rank)] if rank else []) + ([("lightning", 64)] if fast else [])
    for transformer in transformers_of(pipes):
        for name, r in adapters:
            transformer.add_adapter(LoraConfig(r=r, lora_alpha=r, target_modules=TARGET_MODULES), adapter_name=name)
        with torch.no_grad():
            for name, parameter in transformer.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=1e-3)
        transformer.set_adapters([name for name, _ in adapters])
    if fast:
        for pipe in pipes:
            pipe.scheduler = lightning_scheduler(pipe.scheduler)
        notes.append(
            "fast: a random rank-64 stand-in for the Lightning LoRA, its scheduler "
            "(base_shift = max_shift = log 3, no terminal shift), true CFG off"
        )
    if rank:
        notes.append(f"lora: one random rank-{rank} adapter on every attention projection, scale 1 (peft, unmerged)")


def apply_cache(pipes, kind: Optional[str], threshold: float, notes: list[str]) -> None:
    if not kind:
        return
    if kind == "taylorseer":
        from diffusers import TaylorSeerCacheConfig

        for transformer in transformers_of(pipes):
            transformer.enable_cache(TaylorSeerCacheConfig())
        notes.append("cache: diffusers TaylorSeer, default settings (random weights: indicative only)")
        return
    if kind == "cache-dit":
        try:
            import cache_dit
        except ImportError:
            notes.append("cache: cache-dit is not installed (pip install cache-dit); running without a cache")
            return
        for pipe in pipes:
            cache_dit.enable_cache(pipe)
        notes.append("cache: cache-dit defaults")
        return
    try:
        from diffusers import FirstBlockCacheConfig
    except ImportError:
        notes.append(
            "cache: this diffusers has no FirstBlockCacheConfig and cache-dit was not asked for; "
            "running without a cache"
        )
        return
    try:
        for transformer in transformers_of(pipes):
            transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    except (IndexError, ValueError) as exc:  # e.g. the tiny transformer has one block, FBC needs two
        notes.append(
            f"cache: FirstBlockCache does not apply to this transformer ({type(exc).__name__}: {exc}); "
            "running without a cache"
        )
        return
    notes.append(
        f"cache: diffusers FirstBlockCache, threshold {threshold} (with random weights the skip "
        "decisions say nothing about real images: indicative only)"
    )


def apply_compile(pipes, mode: str, notes: list[str]) -> None:
    what = "nothing"
    for transformer in transformers_of(pipes):
        if mode == "regional" and hasattr(transformer, "compile_repeated_blocks"):
            transformer.compile_repeated_blocks(fullgraph=True)
            what = "the repeated transformer blocks (regional)"
        else:
            transformer.compile()  # nn.Module.compile: in place, the pipelines keep their reference
            what = "the whole transformer"
    notes.append(f"compile: torch.compile of {what}; the warm-up call includes compiling")


# ---------------------------------------------------------------------------------------------
# Timing


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def image_quality(image, reference) -> dict[str, float]:
    """PSNR (dB) and SSIM (8x8 windows, luminance) of ``image`` against ``reference``."""
    import numpy as np

    a = np.asarray(image.convert("L"), dtype=np.float64)
    b = np.asarray(reference.convert("L"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    h, w = (a.shape[0] // 8) * 8, (a.shape[1] // 8) * 8
    wa = a[:h, :w].reshape(h // 8, 8, w // 8, 8).swapaxes(1, 2).reshape(-1, 64)
    wb = b[:h, :w].reshape(h // 8, 8, w // 8, 8).swapaxes(1, 2).reshape(-1, 64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = wa.mean(1), wb.mean(1)
    cov = ((wa - ma[:, None]) * (wb - mb[:, None])).mean(1)
    ssim = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (wa.var(1) + wb.var(1) + c2))
    return {"psnr_db": psnr, "ssim": float(ssim.mean())}


def time_case(pipe, arguments: dict, steps: int, runs: int, device: str, cfg: float = 4.0) -> dict:
    """One warm-up call, then ``runs`` timed calls: seconds per image, per step, peak memory.
    The last image is returned under ``image`` (for quality comparisons)."""
    import torch

    marks: list[float] = []

    def on_step(pipeline, index, timestep, tensors):
        synchronize(device)
        marks.append(time.perf_counter())
        return {}

    def call() -> tuple[float, list[float]]:
        marks.clear()
        synchronize(device)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # random weights: NaN pixels on cast
            images = pipe(
                **arguments,
                num_inference_steps=steps,
                true_cfg_scale=cfg,
                negative_prompt=NEGATIVE_PROMPT if cfg > 1 else None,
                generator=torch.Generator(device="cpu").manual_seed(0),
                callback_on_step_end=on_step,
                output_type="pil",
            ).images
        synchronize(device)
        total = time.perf_counter() - started
        last_image[0] = images[0]
        return total, [b - a for a, b in itertools.pairwise(marks)]

    last_image: list[Any] = [None]

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    first, _ = call()
    totals, step_times = [], []
    for _ in range(runs):
        total, steps_s = call()
        totals.append(total)
        step_times.extend(steps_s)
    out = {
        "first_call_s": first,
        "seconds_per_image": statistics.median(totals) if totals else first,
        "seconds_per_step": statistics.median(step_times) if step_times else None,
    }
    if device.startswith("cuda"):
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    out["image"] = last_image[0]
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument(
        "--profile",
        choices=["qwen", "qwen21"],
        default="qwen",
        help="qwen: the 2512/2511 pair (default); qwen21: Qwen-Image 2.1, one pipeline for both cases",
    )
    parser.add_argument(
        "--steps", type=int, help=f"denoising steps (default 50; {QWEN21_STEPS} with --profile qwen21; 8 Turbo)"
    )
    parser.add_argument("--runs", type=int, default=2, help="timed runs per case after one warm-up (default 2)")
    parser.add_argument("--only", default="t2i,edit", help="cases: t2i, edit or both (default t2i,edit)")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="regional",
        choices=["regional", "full"],
        help="torch.compile the transformer: its repeated blocks (regional, the default) or whole",
    )
    parser.add_argument(
        "--attention",
        default="sdpa",
        help="attention backend via diffusers' set_attention_backend: sdpa (default), flash, "
        "_flash_3, sage, flex, _native_cudnn, … (needs the kernel's package)",
    )
    parser.add_argument("--fp8", action="store_true", help="FP8 linear layers in the transformer (torchao)")
    parser.add_argument(
        "--cache",
        nargs="?",
        const="first_block",
        choices=["first_block", "fbc", "taylorseer", "cache-dit"],
        help="a step cache: diffusers' FirstBlockCache (first_block, the default; fbc is the old "
        "name), TaylorSeer, or cache-dit. Also times the uncached image and reports PSNR/SSIM",
    )
    parser.add_argument(
        "--layout",
        choices=["one-transformer", "shared"],
        default="one-transformer",
        help="shared: both models resident at once over one text encoder and VAE (the service's "
        "shared layout); one-transformer (default): each model's own footprint",
    )
    parser.add_argument("--offload", choices=["model", "group"], help="model CPU offload or group offloading")
    parser.add_argument("--lora", type=int, metavar="RANK", help="run with a random LoRA of this rank active")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="fast mode: Lightning stand-in LoRA and scheduler, true CFG off (use with --steps 4); "
        "with --profile qwen21 the Turbo checkpoint's 8-step grid, no CFG",
    )
    parser.add_argument("--cache-threshold", type=float, default=0.08, help="FirstBlockCache threshold")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="run on the CPU with the tiny profile's components (a check that the script works)",
    )
    parser.add_argument("--device", default="cuda", help="CUDA device for the full-size model (default cuda)")
    parser.add_argument(
        "--check-configs",
        action="store_true",
        help="build the full-size components on the meta device and print parameter counts",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    import torch

    qwen21 = args.profile == "qwen21"
    turbo_sigmas: Optional[list[float]] = None
    if qwen21 and args.fast:
        from models.tiny21 import TURBO_SIGMAS

        turbo_sigmas = list(TURBO_SIGMAS)
    if args.steps is None:
        args.steps = len(turbo_sigmas) if turbo_sigmas else QWEN21_STEPS if qwen21 else 50
    if args.check_configs:
        build = build_qwen21_components if qwen21 else build_components
        components = build("meta", torch.bfloat16)
        counts = parameter_counts(components)
        for name, billions in counts.items():
            print(f"{name:<22} {billions:7.3f} B parameters ({billions * 2:6.1f} GB in bf16)")
        if args.json:
            args.json.write_text(json.dumps({"parameters_billions": counts}, indent=2) + "\n")
        return 0

    device = "cpu" if args.tiny else args.device
    if not args.tiny and not torch.cuda.is_available():
        print(
            "no CUDA device: the full-size model needs an NVIDIA GPU with ~60 GB of memory "
            "(use --tiny to run the same code on the CPU, or --check-configs)",
            file=sys.stderr,
        )
        return 2
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    notes: list[str] = []
    started = time.perf_counter()
    if qwen21:
        if args.layout == "shared":
            notes.append("layout: one pipeline serves both cases (Qwen-Image 2.1 has one set of weights)")
        t2i, edit, set_mode = build_qwen21_pipelines(None if args.offload else device, tiny=args.tiny)
        notes.append(
            "tiny 2.1 profile components, float32 on the CPU"
            if args.tiny
            else f"full-size Qwen-Image 2.1, random weights, bfloat16 on {torch.cuda.get_device_name(device)}"
        )
    elif args.tiny:
        t2i, edit, set_mode = build_tiny_pipelines(args.layout)
        notes.append("tiny profile components, float32 on the CPU")
    else:
        if args.layout == "shared" and args.offload == "model":
            print(
                "the shared layout cannot use model CPU offload (the service refuses it too): use --offload group",
                file=sys.stderr,
            )
            return 2
        t2i, edit, set_mode = build_full_pipelines("cpu" if args.offload else device, args.layout)
        notes.append(
            f"full-size Qwen-Image, random weights, bfloat16 on {torch.cuda.get_device_name(device)}, "
            f"layout {args.layout}"
        )
    build_s = time.perf_counter() - started
    pipes = (t2i, edit)
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
    apply_attention(pipes, args.attention, notes)
    if args.fp8:
        apply_fp8(pipes, device, notes)
    apply_lora(pipes, args.lora, args.fast and not qwen21, notes)
    apply_offload(pipes, args.offload, device, notes)
    cfg = 1.0 if args.fast or qwen21 else 4.0  # 2.1 runs without CFG by default
    t2i_arguments: dict[str, Any] = {"prompt": PROMPT, "width": SIZE, "height": SIZE}
    if turbo_sigmas:
        t2i_arguments["sigmas"] = turbo_sigmas
        notes.append(f"fast: the Turbo grid ({len(turbo_sigmas)} sigmas, evenly spaced stand-in), no CFG")

    def edit_arguments(image) -> dict[str, Any]:
        arguments: dict[str, Any] = {"prompt": EDIT_PROMPT, "image": [image] if qwen21 else image}
        if turbo_sigmas:
            arguments["sigmas"] = turbo_sigmas
        return arguments

    cache = "first_block" if args.cache == "fbc" else args.cache
    references: dict[str, Any] = {}
    if cache:
        # The uncached image of each case, the same seed, for the quality figures.
        from PIL import Image as _Image

        if "t2i" in cases:
            set_mode("t2i")
            references["t2i"] = time_case(t2i, t2i_arguments, args.steps, args.runs, device, cfg)
        if "edit" in cases:
            set_mode("edit")
            references["edit_1img"] = time_case(
                edit,
                edit_arguments(_Image.new("RGB", (SIZE, SIZE), (200, 60, 40))),
                args.steps,
                args.runs,
                device,
                cfg,
            )
    apply_cache(pipes, cache, args.cache_threshold, notes)
    if args.compile:
        apply_compile(pipes, args.compile, notes)

    from PIL import Image

    results: dict[str, Any] = {
        "profile": args.profile,
        "build_s": build_s,
        "steps": args.steps,
        "device": device,
        "options": notes,
    }
    if device.startswith("cuda"):
        results["weights_gpu_memory_gib"] = torch.cuda.memory_allocated() / 2**30
    if "t2i" in cases:
        set_mode("t2i")
        results["t2i"] = time_case(t2i, t2i_arguments, args.steps, args.runs, device, cfg)
    if "edit" in cases:
        set_mode("edit")
        source = Image.new("RGB", (SIZE, SIZE), (200, 60, 40))
        results["edit_1img"] = time_case(edit, edit_arguments(source), args.steps, args.runs, device, cfg)
    for key, reference in references.items():
        if key in results:
            results[key]["uncached_seconds_per_image"] = reference["seconds_per_image"]
            results[key].update(image_quality(results[key]["image"], reference["image"]))
    for key in ("t2i", "edit_1img"):
        if key in results:
            results[key].pop("image", None)

    print(
        f"\nQwen-Image{' 2.1' if qwen21 else ''} {'tiny profile' if args.tiny else 'full size, random weights'}: "
        f"{SIZE}x{SIZE}, {args.steps} steps, true CFG {cfg} (built in {build_s:.1f} s)"
    )
    for note in notes:
        print(f"  {note}")
    if "weights_gpu_memory_gib" in results:
        print(f"  weights on the GPU: {results['weights_gpu_memory_gib']:.1f} GiB")
    for key, label in (("t2i", "text-to-image"), ("edit_1img", "edit, one 1024² input")):
        if key in results:
            r = results[key]
            line = (
                f"  {label:<22} {r['seconds_per_image']:8.2f} s/image  "
                f"{(r['seconds_per_step'] or 0) * 1000:8.1f} ms/step  (first call {r['first_call_s']:.1f} s)"
            )
            if "peak_gpu_memory_gib" in r:
                line += f"  peak {r['peak_gpu_memory_gib']:.1f} GiB"
            print(line)
            if "psnr_db" in r:
                print(
                    f"  {'':<22} uncached {r['uncached_seconds_per_image']:.2f} s/image "
                    f"({r['uncached_seconds_per_image'] / r['seconds_per_image']:.2f}x with the cache); "
                    f"PSNR {r['psnr_db']:.1f} dB, SSIM {r['ssim']:.3f} against the uncached image"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

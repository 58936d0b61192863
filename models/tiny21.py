"""The ``tiny21`` profile's components: ``QwenImage21Pipeline`` with tiny random weights built in code.

Like ``models.tiny`` for the 2512/2511 pair: nothing is downloaded; a tiny Qwen3-VL encoder (with a
byte-level BPE tokenizer trained on the pipeline's templates and an image-only processor), a tiny
single-stream block-causal transformer and a tiny 64-channel RGBA VAE that compresses 16x spatially
(like the real one, so a 1024x1024 image costs the production number of tokens, 4096) are built from
a fixed seed, saved with ``save_pretrained`` and loaded back with ``from_pretrained``.

The Turbo checkpoint is a second pipeline folder whose transformer has other weights and whose
``model_index.json`` carries ``sample_sigmas`` (an 8-step grid), as the published Turbo checkpoint
does; the profile's fast mode loads only its transformer and that grid.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib import metadata

# ProcessorMixin: see models.tiny (diffusers resolves custom processor classes through their module).
from transformers import ProcessorMixin, Qwen3VLProcessor  # noqa: F401

from .tiny import _BUILD_LOCK, build_tokenizer, vl_encoder_config

log = logging.getLogger(__name__)

TINY21_FORMAT = 1
SEED = 21
TURBO_SEED = 22

SYSTEM_PROMPT = "Comprehend and analyze the provided prompt."
# QwenImage21Pipeline's templates (diffusers 0.42.1), the tokenizer's training text.
TEMPLATES = (
    f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n",
    f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
    "<image1><|vision_start|><|image_pad|><|vision_end|> <image2><|im_end|>\n<|im_start|>assistant\n",
)
# What the pipeline's apply_chat_template on the system message must render: the template's prefix.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}"
)

_HIDDEN = 16  # text hidden size = vision output size = transformer context_in_dim
Z_DIM = 64  # the real VAE's latent channels

VAE_CONFIG = {
    # Four channels (RGBA passes) decode 1024x1024 twice as fast as eight.
    "base_dim": 4,
    "decoder_base_dim": 4,
    "z_dim": Z_DIM,
    # Five levels and four downsampling stages: the real VAE's 16x spatial compression.
    "dim_mult": [1, 1, 1, 1, 1],
    "num_res_blocks": 0,
    "attn_scales": [],
    "temperal_downsample": [False, True, True, True],
    "latents_mean": [0.0] * Z_DIM,
    "latents_std": [1.0] * Z_DIM,
    "in_channels": 4,  # RGBA in and out, like the real one
    "out_channels": 4,
}

TRANSFORMER_CONFIG = {
    "patch_size": 1,
    "in_channels": Z_DIM,
    "out_channels": Z_DIM,
    # Two blocks: FirstBlockCache needs more than one.
    "num_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 1,
    "context_in_dim": _HIDDEN,
    "mlp_ratio": 2,
    "axes_dims_rope": [4, 6, 6],  # sums to attention_head_dim
    "causal_condition": True,
}

TEXT_CONFIG = {
    "hidden_size": _HIDDEN,
    "intermediate_size": _HIDDEN,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 8,
    # mrope_section sums to half the head dim
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]},
}

VISION_CONFIG = {
    "depth": 1,
    "hidden_size": _HIDDEN,
    "intermediate_size": _HIDDEN,
    "num_heads": 1,
    "out_hidden_size": _HIDDEN,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 64,
    "deepstack_visual_indexes": [0],
}

SCHEDULER_CONFIG = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}

# The Turbo checkpoint's own sampling grid (8 steps, no guidance); the tiny one is evenly spaced.
TURBO_SIGMAS = [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]


IMAGE_SIZE_BOUNDS = {"shortest_edge": 65536, "longest_edge": 16777216}


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    """``Qwen3VLProcessor`` without a video processor (see ``models.tiny.ImageOnlyQwen2VLProcessor``:
    the CPU torch wheel cannot import torchvision, which the video processor needs)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)


def tiny21_pipeline_dir(cache_dir: str, turbo: bool = False) -> str:
    """The folder the tiny 2.1 pipeline (or its Turbo checkpoint) is (or will be) saved in."""
    name = "tiny21-turbo" if turbo else "tiny21"
    return os.path.join(cache_dir, f"{name}-{_fingerprint(turbo)}")


def ensure_tiny21_pipeline(cache_dir: str, turbo: bool = False) -> str:
    """Build and save the tiny 2.1 pipeline unless it is there; return its folder (race-safe, like
    ``models.tiny.ensure_tiny_pipeline``)."""
    final = tiny21_pipeline_dir(cache_dir, turbo)
    if os.path.isfile(os.path.join(final, "model_index.json")):
        return final
    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.", dir=cache_dir)
    try:
        build_tiny21_pipeline(turbo).save_pretrained(staging)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, final)
            log.info("built tiny 2.1%s pipeline in %s", " Turbo" if turbo else "", final)
        except OSError:
            if not os.path.isfile(os.path.join(final, "model_index.json")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def build_tiny21_pipeline(turbo: bool = False):
    """The tiny ``QwenImage21Pipeline`` in memory; ``turbo``: the Turbo checkpoint's stand-in."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage21,
        FlowMatchEulerDiscreteScheduler,
        QwenImage21Pipeline,
        QwenImage21Transformer2DModel,
    )

    tokenizer = build_tokenizer(list(TEMPLATES))
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(TURBO_SEED if turbo else SEED)
        transformer = QwenImage21Transformer2DModel(**copy.deepcopy(TRANSFORMER_CONFIG))
        torch.manual_seed(SEED)
        vae = AutoencoderKLQwenImage21(**copy.deepcopy(VAE_CONFIG))
        torch.manual_seed(SEED)
        text_encoder = _build_text_encoder(tokenizer)
    pipeline = QwenImage21Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**copy.deepcopy(SCHEDULER_CONFIG)),
        vae=vae,
        text_encoder=text_encoder,
        processor=build_processor(tokenizer),
        transformer=transformer,
        sample_sigmas=list(TURBO_SIGMAS) if turbo else None,
    )
    _check_template_prefix(pipeline)
    return pipeline


def build_processor(tokenizer) -> ImageOnlyQwen3VLProcessor:
    from transformers import Qwen2VLImageProcessorPil

    return ImageOnlyQwen3VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(
            patch_size=VISION_CONFIG["patch_size"],
            temporal_patch_size=VISION_CONFIG["temporal_patch_size"],
            merge_size=VISION_CONFIG["spatial_merge_size"],
            # Qwen3-VL's published bounds: the pipeline's ~1 MP condition images are never resized
            # again, so each keeps one vision slot per 2x2 group of its latent tokens.
            size=dict(IMAGE_SIZE_BOUNDS),
        ),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def _build_text_encoder(tokenizer):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = vl_encoder_config(Qwen3VLConfig, tokenizer, TEXT_CONFIG, VISION_CONFIG)
    return Qwen3VLForConditionalGeneration(config).eval()


def _check_template_prefix(pipeline) -> None:
    # The pipeline drops the system message's tokens, counted with the processor's chat template;
    # they must be exactly the raw template's system part or template tokens reach the model.
    prefix = pipeline.prompt_template_t2i.split("<|im_start|>user")[0]
    count = len(pipeline.processor.tokenizer(prefix).input_ids)
    if count != pipeline._drop_idx:
        raise RuntimeError(
            f"the tiny 2.1 processor drops {pipeline._drop_idx} tokens but the system part is {count}; "
            f"update CHAT_TEMPLATE in models/tiny21.py"
        )


def _fingerprint(turbo: bool) -> str:
    versions = {}
    for package in ("diffusers", "transformers", "tokenizers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    spec = {
        "format": TINY21_FORMAT,
        "turbo": turbo,
        "seeds": [SEED, TURBO_SEED],
        "vae": VAE_CONFIG,
        "transformer": TRANSFORMER_CONFIG,
        "text": TEXT_CONFIG,
        "vision": VISION_CONFIG,
        "scheduler": SCHEDULER_CONFIG,
        "sigmas": TURBO_SIGMAS,
        "templates": TEMPLATES,
        "chat_template": CHAT_TEMPLATE,
        "image_size": IMAGE_SIZE_BOUNDS,
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]

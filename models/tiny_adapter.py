"""Tiny LoRA adapters for the tiny profile, built in code like its pipelines.

A real LoRA file for the tiny transformer: peft's LoRA layers on every attention projection,
random weights from a fixed seed, saved with the pipeline's own ``save_lora_weights`` as
``.safetensors`` and loaded back through ``load_lora_weights`` exactly like a published adapter.
The tiny profile's "lightning" adapter is one of these, so fast mode runs end to end in tests.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .profiles import IMAGE_EDIT, check_kind
from .tiny import EDIT_TRANSFORMER_EXTRA, TRANSFORMER_CONFIG

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


def build_tiny_lora(
    kind: str, directory: str, *, seed: int, rank: int = 4, strength: float = 0.5, num_layers: int | None = None
) -> str:
    """Write a tiny LoRA for the tiny ``kind`` transformer into ``directory``; return the file's path.

    ``strength`` is the standard deviation of the random LoRA weights: large enough that the
    adapter visibly changes the output. ``num_layers`` matches a tiny transformer built with more
    blocks than the default (step-caching tests need two).
    """
    import torch
    from diffusers import QwenImagePipeline, QwenImageTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    check_kind(kind)
    config = dict(TRANSFORMER_CONFIG, **(EDIT_TRANSFORMER_EXTRA if kind == IMAGE_EDIT else {}))
    if num_layers is not None:
        config["num_layers"] = num_layers
    generator = torch.Generator().manual_seed(seed)
    transformer: Any = QwenImageTransformer2DModel(**config)  # peft's mixin methods are invisible to mypy
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGET_MODULES))
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * strength)
    layers = get_peft_model_state_dict(transformer)
    os.makedirs(directory, exist_ok=True)
    # Written beside and renamed into place: several processes may build the same adapter at once.
    staging = tempfile.mkdtemp(prefix=".lora.", dir=directory)
    QwenImagePipeline.save_lora_weights(staging, transformer_lora_layers=layers, weight_name=WEIGHT_NAME)
    final = os.path.join(directory, WEIGHT_NAME)
    os.replace(os.path.join(staging, WEIGHT_NAME), final)
    os.rmdir(staging)
    return final


def tiny_lora_dir(cache_dir: str, kind: str, name: str) -> str:
    """Where the tiny ``kind`` adapter called ``name`` is kept under ``cache_dir``."""
    check_kind(kind)
    return os.path.join(cache_dir, "tiny-loras", f"{kind.replace('_', '-')}-{name}")


def ensure_tiny_lora(kind: str, cache_dir: str, name: str) -> str:
    """Build the tiny ``kind`` adapter called ``name`` unless it exists; return its folder.

    Its weights are seeded by its name, so each name always means the same adapter.
    """
    folder = tiny_lora_dir(cache_dir, kind, name)
    if not os.path.isfile(os.path.join(folder, WEIGHT_NAME)):
        seed = int.from_bytes(name.encode()[:4].ljust(4, b"\0"), "little")
        build_tiny_lora(kind, folder, seed=seed)
    return folder

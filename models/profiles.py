"""Model profiles: which weights, pipeline classes, dtype and device each model of the service uses.

A profile is plain data chosen by name (the ``MODEL_PROFILE`` setting):

- ``qwen``: production. ``Qwen/Qwen-Image-2512`` and ``Qwen/Qwen-Image-Edit-2511`` in bfloat16 on
  a CUDA GPU, from a Hugging Face id or a local directory.
- ``tiny``: the embedded default. The same diffusers pipeline classes with tiny random-weight
  components built in code (``models.tiny``), on the CPU. Images are noise of the right size.
- ``sleep``: for benchmarks of the serving layer only. No torch work: each step sleeps a fixed
  time and the "images" are solid colours. Never a default.

Pure Python on purpose: the web ingress imports this module and must stay free of torch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TEXT_TO_IMAGE = "text_to_image"
IMAGE_EDIT = "image_edit"
KINDS = (TEXT_TO_IMAGE, IMAGE_EDIT)

PROFILE_NAMES = ("qwen", "tiny", "sleep")

# Names of the service settings that choose weights; error messages point users at them.
PROFILE_SETTING = "MODEL_PROFILE"
PATH_SETTINGS = {TEXT_TO_IMAGE: "TEXT_TO_IMAGE_MODEL_PATH", IMAGE_EDIT: "IMAGE_EDIT_MODEL_PATH"}
CACHE_DIR_SETTING = "MODEL_CACHE_DIR"

QWEN_MODEL_IDS = {TEXT_TO_IMAGE: "Qwen/Qwen-Image-2512", IMAGE_EDIT: "Qwen/Qwen-Image-Edit-2511"}
PIPELINE_CLASSES = {TEXT_TO_IMAGE: "QwenImagePipeline", IMAGE_EDIT: "QwenImageEditPlusPipeline"}

_CAPABILITIES = {
    TEXT_TO_IMAGE: ["text-to-image", "image generation"],
    IMAGE_EDIT: ["image-to-image", "image editing", "multi-image composition"],
}


class ModelLoadError(RuntimeError):
    """A model cannot be loaded; the message says what to do about it."""


@dataclass
class ModelInfo:
    """What ``GET /models`` shows about one model."""

    name: str
    description: str
    capabilities: list[str]


@dataclass
class Profile:
    """Everything needed to load both models of one profile; plain data, safe to pickle."""

    name: str
    description: str
    text_to_image: ModelInfo
    image_edit: ModelInfo
    # kind -> Hugging Face id or local directory; empty for models built in code or not needed
    sources: dict[str, str]
    # kind -> diffusers pipeline class name; empty for the sleep profile
    pipeline_classes: dict[str, str]
    dtype: str  # "bfloat16", "float32", or "none" when no tensors are involved
    device: str  # default device for ``load``
    cache_dir: str | None = None
    cpu_offload: bool = False
    sleep_seconds_per_step: float = 0.0
    benchmark_only: bool = False
    local_sources: dict[str, bool] = field(default_factory=dict)

    def info(self, kind: str) -> ModelInfo:
        """Return the ``ModelInfo`` of ``kind`` (``text_to_image`` or ``image_edit``)."""
        check_kind(kind)
        return self.text_to_image if kind == TEXT_TO_IMAGE else self.image_edit

    def is_local_source(self, kind: str) -> bool:
        """True when ``kind``'s weights come from a local directory rather than a hub id."""
        return self.local_sources.get(kind, False)


def check_kind(kind: str) -> None:
    """Raise ``ValueError`` unless ``kind`` is one of ``KINDS``."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")


def get_profile(
    name: str,
    *,
    cache_dir: str | None = None,
    text_to_image_path: str | None = None,
    image_edit_path: str | None = None,
    cpu_offload: bool = False,
    sleep_seconds_per_step: float = 0.01,
) -> Profile:
    """Return the profile called ``name`` (``qwen``, ``tiny`` or ``sleep``).

    ``cache_dir`` is the Hugging Face cache for ``qwen`` and the folder the built components go
    to for ``tiny`` (default ``~/.cache/qwen-image-service``). ``text_to_image_path`` and
    ``image_edit_path`` override the ``qwen`` weights with a local directory (an absolute or
    ``./`` path, or any existing directory) or another hub id. ``cpu_offload`` keeps ``qwen``
    components in CPU memory and moves each to the GPU only while it runs.
    ``sleep_seconds_per_step`` is the ``sleep`` profile's time per denoising step.
    """
    cache_dir = os.path.expanduser(str(cache_dir)) if cache_dir else None
    if name == "qwen":
        return _qwen_profile(cache_dir, text_to_image_path, image_edit_path, cpu_offload)
    overrides = {k: v for k, v in zip(KINDS, (text_to_image_path, image_edit_path)) if v}
    if overrides:
        # The embedded profiles build their own components; a stray path setting must not
        # stop the service from starting, but it should not pass unnoticed either.
        log.warning("profile %r ignores model paths %s", name, overrides)
    if name == "tiny":
        return _tiny_profile(cache_dir)
    if name == "sleep":
        if sleep_seconds_per_step < 0:
            raise ValueError(f"sleep_seconds_per_step must be >= 0, got {sleep_seconds_per_step}")
        return _sleep_profile(sleep_seconds_per_step)
    raise ValueError(f"unknown model profile {name!r}; use one of {', '.join(PROFILE_NAMES)}")


def default_tiny_cache_dir() -> str:
    """Where the ``tiny`` profile writes its components when no cache dir is configured."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "qwen-image-service")


def _looks_local(source: str) -> bool:
    return os.path.isabs(source) or source.startswith((".", "~")) or os.path.isdir(source)


def _qwen_profile(
    cache_dir: str | None, text_to_image_path: str | None, image_edit_path: str | None, cpu_offload: bool
) -> Profile:
    sources: dict[str, str] = {}
    local: dict[str, bool] = {}
    for kind, override in zip(KINDS, (text_to_image_path, image_edit_path)):
        source = override or QWEN_MODEL_IDS[kind]
        local[kind] = _looks_local(source)
        sources[kind] = os.path.abspath(os.path.expanduser(source)) if local[kind] else source
    return Profile(
        name="qwen",
        description="Qwen-Image-2512 and Qwen-Image-Edit-2511, bfloat16 on a CUDA GPU",
        text_to_image=ModelInfo(
            name=QWEN_MODEL_IDS[TEXT_TO_IMAGE],
            description="Qwen-Image-2512 文生图模型",
            capabilities=list(_CAPABILITIES[TEXT_TO_IMAGE]),
        ),
        image_edit=ModelInfo(
            name=QWEN_MODEL_IDS[IMAGE_EDIT],
            description="Qwen-Image-Edit-2511 图像编辑模型",
            capabilities=list(_CAPABILITIES[IMAGE_EDIT]),
        ),
        sources=sources,
        pipeline_classes=dict(PIPELINE_CLASSES),
        dtype="bfloat16",
        device="cuda",
        cache_dir=cache_dir,
        cpu_offload=cpu_offload,
        local_sources=local,
    )


def _tiny_profile(cache_dir: str | None) -> Profile:
    return Profile(
        name="tiny",
        description="tiny random-weight Qwen-Image pipelines built in code, float32 on the CPU",
        text_to_image=ModelInfo(
            name="tiny/Qwen-Image-2512",
            description="Qwen-Image-2512 文生图模型（微型随机权重版，用于测试与演示，输出为噪声图像）",
            capabilities=list(_CAPABILITIES[TEXT_TO_IMAGE]),
        ),
        image_edit=ModelInfo(
            name="tiny/Qwen-Image-Edit-2511",
            description="Qwen-Image-Edit-2511 图像编辑模型（微型随机权重版，用于测试与演示，输出为噪声图像）",
            capabilities=list(_CAPABILITIES[IMAGE_EDIT]),
        ),
        sources={kind: "" for kind in KINDS},
        pipeline_classes=dict(PIPELINE_CLASSES),
        dtype="float32",
        device="cpu",
        cache_dir=cache_dir or default_tiny_cache_dir(),
        local_sources={kind: True for kind in KINDS},
    )


def _sleep_profile(seconds_per_step: float) -> Profile:
    note = "（基准测试专用：每步休眠，输出纯色图像）"
    return Profile(
        name="sleep",
        description=f"benchmark stand-in: sleeps {seconds_per_step} s per step, returns solid-colour images",
        text_to_image=ModelInfo(
            name="sleep/Qwen-Image-2512",
            description="Qwen-Image-2512 文生图模型" + note,
            capabilities=list(_CAPABILITIES[TEXT_TO_IMAGE]),
        ),
        image_edit=ModelInfo(
            name="sleep/Qwen-Image-Edit-2511",
            description="Qwen-Image-Edit-2511 图像编辑模型" + note,
            capabilities=list(_CAPABILITIES[IMAGE_EDIT]),
        ),
        sources={kind: "" for kind in KINDS},
        pipeline_classes={},
        dtype="none",
        device="cpu",
        sleep_seconds_per_step=seconds_per_step,
        benchmark_only=True,
    )

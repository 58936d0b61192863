"""Model profiles: which weights, pipeline classes, dtype and device each model of the service uses.

A profile is plain data chosen by name (the ``MODEL_PROFILE`` setting):

- ``qwen``: production. ``Qwen/Qwen-Image-2512`` and ``Qwen/Qwen-Image-Edit-2511`` in bfloat16 on
  a CUDA GPU, from a Hugging Face id or a local directory.
- ``tiny``: the embedded default. The same diffusers pipeline classes with tiny random-weight
  components built in code (``models.tiny``), on the CPU. Images are blocky abstractions of the right size.
- ``qwen21``: opt-in, never a default. ``Qwen/Qwen-Image-2.1`` (Qwen Research License,
  non-commercial): one pipeline (``QwenImage21Pipeline``) serves text-to-image and editing with 1-N
  reference images from one set of weights, RGBA output; its fast mode is the Turbo checkpoint's
  transformer (8 steps, no guidance) loaded beside the base one (``QWEN21_TURBO_PATH``).
- ``tiny21``: the same for tests and trying it out: a tiny random-weight 2.1 pipeline built in code
  (``models.tiny21``) on the CPU, with a tiny Turbo checkpoint.
- ``sleep``: for benchmarks of the serving layer only. No torch work: each step sleeps a fixed
  time and the "images" are solid colours. Never a default.
- ``faulty``: for test suites only. The ``sleep`` profile, plus the failures a prompt asks for
  (``models.faulty``): replica crashes, exceptions, out of memory, failed result writes, slower steps.

Pure Python on purpose: the web ingress imports this module and must stay free of torch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .faulty import FaultHooks
from .hooks import GenerationHooks
from .kinds import KIND_NAMES, ModelKind

log = logging.getLogger(__name__)

TEXT_TO_IMAGE = ModelKind.text_to_image.value
IMAGE_EDIT = ModelKind.image_edit.value
KINDS = KIND_NAMES

PROFILE_NAMES = ("qwen", "tiny", "sleep", "faulty", "qwen21", "tiny21")

# Qwen-Image 2.1 (models.tiny21 builds its tiny version). One pipeline serves both kinds.
QWEN21_MODEL_ID = "Qwen/Qwen-Image-2.1"
QWEN21_PIPELINE_CLASS = "QwenImage21Pipeline"
QWEN21_PATH_SETTING = "QWEN21_MODEL_PATH"
QWEN21_TURBO_SETTING = "QWEN21_TURBO_PATH"
UNIFIED_PROFILES = ("qwen21", "tiny21")
# Reference images one 2.1 edit takes on the service's extension routes (the contract's edit
# routes keep their 1-2); the pipeline itself has no fixed limit: each adds ~1 MP of tokens.
QWEN21_MAX_REFERENCES = 4
QWEN21_DEFAULT_STEPS = 40
QWEN21_TURBO_STEPS = 8  # the published Turbo checkpoint's grid (its model_index.json sample_sigmas)
APACHE_LICENSE = "Apache-2.0"
QWEN_RESEARCH_LICENSE = "Qwen Research License (non-commercial)"
# The profile whose model draws transparent (RGBA) images, for the 400 that names it.
TRANSPARENT_PROFILE = "qwen21"
# The model family a LoRA adapter was trained for (the catalogue's ``base``): adapters of the
# 2512/2511 pair do not fit Qwen-Image 2.1's single-stream transformer, nor the other way round.
PAIR_ADAPTER_BASE = "qwen-image"
QWEN21_ADAPTER_BASE = "qwen-image-2.1"
ADAPTER_BASES = (PAIR_ADAPTER_BASE, QWEN21_ADAPTER_BASE)

# Names of the service settings that choose weights; error messages point users at them.
PROFILE_SETTING = "MODEL_PROFILE"
PATH_SETTINGS = {kind.value: kind.spec.path_setting for kind in ModelKind}
CACHE_DIR_SETTING = "MODEL_CACHE_DIR"

QWEN_MODEL_IDS = {kind.value: kind.spec.qwen_model_id for kind in ModelKind}
PIPELINE_CLASSES = {kind.value: kind.spec.pipeline_class for kind in ModelKind}
QWEN_LIGHTNING_SOURCES = {kind.value: kind.spec.lightning for kind in ModelKind}


class ModelLoadError(RuntimeError):
    """A model cannot be loaded; the message says what to do about it."""


@dataclass
class ModelInfo:
    """What ``GET /models`` shows about one model."""

    name: str
    description: str
    capabilities: list[str]
    license: str = APACHE_LICENSE


# What the two pipelines of a profile may share when their weights match (models.shared); the
# tokenizer rides along with the text encoder (it is checked with it).
SHARED_COMPONENTS = ("text_encoder", "vae", "tokenizer")


@dataclass
class Profile:
    """Everything needed to load both models of one profile; plain data, safe to pickle."""

    name: str
    description: str
    models: dict[str, ModelInfo]  # kind -> what GET /models shows about it
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
    # seams around a generation (models.hooks): empty but for the ``faulty`` test profile's failures
    hooks: GenerationHooks = field(default_factory=GenerationHooks)
    local_sources: dict[str, bool] = field(default_factory=dict)
    # LoRA adapters, fast mode, step caching and compilation (models.adapters)
    adapter_capacity: int = 4  # adapters kept loaded per pipeline (least recently used evicted)
    adapter_max_mb: int = 0  # and at most this many MB of adapter weights (0: no byte bound)
    # kind -> (hub id or local folder, weight file) of the fast mode's Lightning LoRA; the tiny
    # profile builds its own in code
    lightning_sources: dict[str, tuple[str, str]] = field(default_factory=dict)
    step_cache: str | None = None  # "first_block" or "taylorseer"
    step_cache_threshold: float | None = None  # FirstBlockCache's threshold
    compile: bool = False  # regional torch.compile of the transformer blocks at load
    # Memory (qwen profile): FP8 weight-only transformers (torchao) and group offloading with CUDA
    # streams; cpu_offload above is model CPU offload.
    fp8: bool = False
    group_offload: bool = False
    max_adapter_rank: int = 128  # with compile: adapters up to this rank hotswap without recompiling
    compile_warm_up_size: int = 1024  # with compile: the warm-up generation's width and height
    # Qwen-Image 2.1: one pipeline for both kinds, RGBA output, the Turbo checkpoint as fast mode
    unified: bool = False
    transparent: bool = False  # draws RGBA images (background=transparent)
    turbo_source: str = ""  # hub id or folder of the Turbo checkpoint; empty: no fast mode
    max_references: int = 2  # input images one edit may take
    license: str = APACHE_LICENSE

    def info(self, kind: str) -> ModelInfo:
        """Return the ``ModelInfo`` of ``kind`` (one of ``KINDS``)."""
        check_kind(kind)
        return self.models[kind]

    @property
    def text_to_image(self) -> ModelInfo:
        return self.models[TEXT_TO_IMAGE]

    @property
    def image_edit(self) -> ModelInfo:
        return self.models[IMAGE_EDIT]

    @property
    def adapter_base(self) -> str:
        """The ``base`` of the catalogue's adapters this profile's models can load."""
        return QWEN21_ADAPTER_BASE if self.unified else PAIR_ADAPTER_BASE

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
    model_paths: dict[str, str | None] | None = None,
    cpu_offload: bool = False,
    sleep_seconds_per_step: float = 0.01,
    qwen21_path: str | None = None,
    qwen21_turbo_path: str | None = None,
) -> Profile:
    """Return the profile called ``name`` (``qwen``, ``tiny`` or ``sleep``).

    ``cache_dir`` is the Hugging Face cache for ``qwen`` and the folder the built components go
    to for ``tiny`` (default ``~/.cache/qwen-image-service``). ``text_to_image_path`` and
    ``image_edit_path`` (or ``model_paths``, by kind) override the ``qwen`` weights with a local directory
    (an absolute or
    ``./`` path, or any existing directory) or another hub id. ``cpu_offload`` keeps ``qwen``
    components in CPU memory and moves each to the GPU only while it runs.
    ``sleep_seconds_per_step`` is the ``sleep`` and ``faulty`` profiles' time per denoising step;
    ``faulty`` keeps what it must remember (which prompts crashed once) under ``cache_dir``.
    ``qwen21_path`` and ``qwen21_turbo_path`` point ``qwen21`` at other weights (folder or hub id) for
    the model and its Turbo checkpoint (``""``: no fast mode).
    """
    cache_dir = os.path.expanduser(str(cache_dir)) if cache_dir else None
    paths = {TEXT_TO_IMAGE: text_to_image_path, IMAGE_EDIT: image_edit_path, **(model_paths or {})}
    if name == "qwen":
        return _qwen_profile(cache_dir, paths, cpu_offload)
    if name == "qwen21":
        return _qwen21_profile(cache_dir, qwen21_path, qwen21_turbo_path, cpu_offload)
    overrides = {k: v for k, v in paths.items() if v}
    if overrides:
        # The embedded profiles build their own components; a stray path setting must not
        # stop the service from starting, but it should not pass unnoticed either.
        log.warning("profile %r ignores model paths %s", name, overrides)
    if name == "tiny":
        return _tiny_profile(cache_dir)
    if name == "tiny21":
        return _tiny21_profile(cache_dir)
    if name in ("sleep", "faulty"):
        if sleep_seconds_per_step < 0:
            raise ValueError(f"sleep_seconds_per_step must be >= 0, got {sleep_seconds_per_step}")
        if name == "faulty":
            return _faulty_profile(sleep_seconds_per_step, cache_dir)
        return _sleep_profile(sleep_seconds_per_step)
    raise ValueError(f"unknown model profile {name!r}; use one of {', '.join(PROFILE_NAMES)}")


STEP_CACHE_MODES = ("first_block", "taylorseer")


def with_speed_options(
    profile: Profile,
    *,
    adapter_capacity: int = 4,
    adapter_max_mb: int = 0,
    lightning_sources: dict[str, tuple[str, str]] | None = None,
    step_cache: str | None = None,
    step_cache_threshold: float | None = None,
    compile: bool = False,
    max_adapter_rank: int | None = None,
    compile_warm_up_size: int | None = None,
) -> Profile:
    """``profile`` with its LoRA, fast-mode, step-caching and compilation options set.

    ``lightning_sources`` (kind -> (hub id or folder, file)) replaces the profile's Lightning LoRAs
    for the kinds it names; ``max_adapter_rank`` and ``compile_warm_up_size`` (None: the profile's)
    apply with ``compile``. Raises ``ValueError`` saying what to change for options that cannot
    work together (checked again against the loaded transformer by ``models.load``).
    """
    import dataclasses

    if adapter_capacity < 1:
        raise ValueError(f"the adapter cache must hold at least 1 adapter, got {adapter_capacity}")
    if adapter_max_mb < 0:
        raise ValueError(f"the adapter cache's size in MB must be >= 0 (0: unbounded), got {adapter_max_mb}")
    if step_cache is not None and step_cache not in STEP_CACHE_MODES:
        raise ValueError(f"unknown step cache {step_cache!r}; use one of {', '.join(STEP_CACHE_MODES)} or none")
    if step_cache_threshold is not None and step_cache != "first_block":
        raise ValueError("a step cache threshold applies to the first_block step cache only")
    if max_adapter_rank is not None and max_adapter_rank < 1:
        raise ValueError(f"the highest adapter rank must be at least 1, got {max_adapter_rank}")
    if compile_warm_up_size is not None and (compile_warm_up_size < 16 or compile_warm_up_size % 16):
        raise ValueError(f"the warm-up size must be a positive multiple of 16, got {compile_warm_up_size}")
    if not profile.pipeline_classes and (step_cache or compile):
        raise ValueError(f"the {profile.name} profile runs no model: step caching and compilation do not apply to it")
    sources = dict(profile.lightning_sources)
    for kind, source in (lightning_sources or {}).items():
        check_kind(kind)
        sources[kind] = source
    return dataclasses.replace(
        profile,
        adapter_capacity=adapter_capacity,
        adapter_max_mb=adapter_max_mb,
        lightning_sources=sources,
        step_cache=step_cache,
        step_cache_threshold=step_cache_threshold,
        compile=compile,
        max_adapter_rank=profile.max_adapter_rank if max_adapter_rank is None else max_adapter_rank,
        compile_warm_up_size=profile.compile_warm_up_size if compile_warm_up_size is None else compile_warm_up_size,
    )


def with_memory_options(profile: Profile, *, fp8: bool = False, group_offload: bool = False) -> Profile:
    """``profile`` with FP8 weight-only transformers and/or group offloading.

    Raises ``ValueError`` saying what to change where the combination cannot work.
    """
    import dataclasses

    if (fp8 or group_offload) and profile.name not in ("qwen", "qwen21"):
        raise ValueError(
            f"FP8 and group offloading apply to the qwen and qwen21 profiles on a CUDA GPU, not to {profile.name!r}: "
            f"set QUANTIZATION=none and OFFLOAD=none (or MODEL_PROFILE=qwen)"
        )
    if group_offload and profile.cpu_offload:
        raise ValueError(
            "group offloading and model CPU offload exclude each other: "
            "set OFFLOAD=group with CPU_OFFLOAD=false, or OFFLOAD=model"
        )
    return dataclasses.replace(profile, fp8=fp8, group_offload=group_offload)


def default_tiny_cache_dir() -> str:
    """Where the ``tiny`` profile writes its components when no cache dir is configured."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "qwen-image-service")


def _looks_local(source: str) -> bool:
    return os.path.isabs(source) or source.startswith((".", "~")) or os.path.isdir(source)


def _model_infos(name_prefix: str = "", note: str = "") -> dict[str, ModelInfo]:
    """Each kind's ``ModelInfo``: its production model's name (under ``name_prefix``) and description."""
    infos = {}
    for kind in ModelKind:
        model_id = kind.spec.qwen_model_id
        infos[kind.value] = ModelInfo(
            name=f"{name_prefix}/{model_id.split('/')[-1]}" if name_prefix else model_id,
            description=kind.spec.description + note,
            capabilities=list(kind.spec.capabilities),
        )
    return infos


def _qwen_profile(cache_dir: str | None, paths: dict[str, str | None], cpu_offload: bool) -> Profile:
    sources: dict[str, str] = {}
    local: dict[str, bool] = {}
    for kind in KINDS:
        source = paths.get(kind) or QWEN_MODEL_IDS[kind]
        local[kind] = _looks_local(source)
        sources[kind] = os.path.abspath(os.path.expanduser(source)) if local[kind] else source
    return Profile(
        name="qwen",
        description="Qwen-Image-2512 and Qwen-Image-Edit-2511, bfloat16 on a CUDA GPU",
        models=_model_infos(),
        sources=sources,
        pipeline_classes=dict(PIPELINE_CLASSES),
        dtype="bfloat16",
        device="cuda",
        cache_dir=cache_dir,
        cpu_offload=cpu_offload,
        local_sources=local,
        lightning_sources=dict(QWEN_LIGHTNING_SOURCES),
    )


def _tiny_profile(cache_dir: str | None) -> Profile:
    return Profile(
        name="tiny",
        description="tiny random-weight Qwen-Image pipelines built in code, float32 on the CPU",
        models=_model_infos("tiny", "（微型权重版，用于测试与演示，输出为抽象色块图像）"),
        sources=dict.fromkeys(KINDS, ""),
        pipeline_classes=dict(PIPELINE_CLASSES),
        dtype="float32",
        device="cpu",
        cache_dir=cache_dir or default_tiny_cache_dir(),
        local_sources=dict.fromkeys(KINDS, True),
    )


def _qwen21_infos(name: str, note: str = "") -> dict[str, ModelInfo]:
    """Both kinds' ``ModelInfo`` for the one 2.1 model (``GET /models`` lists it once per kind)."""
    capabilities = {
        TEXT_TO_IMAGE: ["text-to-image", "image generation", "transparent output"],
        IMAGE_EDIT: ["image-to-image", "image editing", "multi-image composition", "transparent output"],
    }
    return {
        kind: ModelInfo(
            name=name,
            description="Qwen-Image 2.1 文生图与图像编辑统一模型" + note,
            capabilities=capabilities[kind],
            license=QWEN_RESEARCH_LICENSE,
        )
        for kind in KINDS
    }


def _qwen21_profile(cache_dir: str | None, path: str | None, turbo_path: str | None, cpu_offload: bool) -> Profile:
    source = path or QWEN21_MODEL_ID
    local = _looks_local(source)
    if local:
        source = os.path.abspath(os.path.expanduser(source))
    turbo = turbo_path if turbo_path is not None else ""
    if turbo and _looks_local(turbo):
        turbo = os.path.abspath(os.path.expanduser(turbo))
    return Profile(
        name="qwen21",
        description="Qwen-Image 2.1 (text-to-image and editing, one model), bfloat16 on a CUDA GPU",
        models=_qwen21_infos(QWEN21_MODEL_ID),
        sources=dict.fromkeys(KINDS, source),
        pipeline_classes=dict.fromkeys(KINDS, QWEN21_PIPELINE_CLASS),
        dtype="bfloat16",
        device="cuda",
        cache_dir=cache_dir,
        cpu_offload=cpu_offload,
        local_sources=dict.fromkeys(KINDS, local),
        unified=True,
        transparent=True,
        turbo_source=turbo,
        max_references=QWEN21_MAX_REFERENCES,
        license=QWEN_RESEARCH_LICENSE,
    )


def _tiny21_profile(cache_dir: str | None) -> Profile:
    return Profile(
        name="tiny21",
        description="tiny random-weight Qwen-Image 2.1 pipeline built in code, float32 on the CPU",
        models=_qwen21_infos("tiny/Qwen-Image-2.1", "（微型权重版，用于测试与演示，输出为随机图像）"),
        sources=dict.fromkeys(KINDS, ""),
        pipeline_classes=dict.fromkeys(KINDS, QWEN21_PIPELINE_CLASS),
        dtype="float32",
        device="cpu",
        cache_dir=cache_dir or default_tiny_cache_dir(),
        local_sources=dict.fromkeys(KINDS, True),
        unified=True,
        transparent=True,
        turbo_source="built in code",
        max_references=QWEN21_MAX_REFERENCES,
        license=QWEN_RESEARCH_LICENSE,
    )


def _sleep_profile(seconds_per_step: float) -> Profile:
    return Profile(
        name="sleep",
        description=f"benchmark stand-in: sleeps {seconds_per_step} s per step, returns solid-colour images",
        models=_model_infos("sleep", "（基准测试专用：每步休眠，输出纯色图像）"),
        sources=dict.fromkeys(KINDS, ""),
        pipeline_classes={},
        dtype="none",
        device="cpu",
        sleep_seconds_per_step=seconds_per_step,
        benchmark_only=True,
    )


def _faulty_profile(seconds_per_step: float, state_dir: str | None) -> Profile:
    return Profile(
        name="faulty",
        description=f"test stand-in: the sleep profile ({seconds_per_step} s per step) with failures on request",
        models=_model_infos("faulty", "（测试专用：按提示词制造故障）"),
        sources=dict.fromkeys(KINDS, ""),
        pipeline_classes={},
        dtype="none",
        device="cpu",
        cache_dir=state_dir,
        sleep_seconds_per_step=seconds_per_step,
        benchmark_only=True,
        hooks=FaultHooks(state_dir),
    )

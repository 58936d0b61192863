"""Loading a profile's model and running it: text-to-image or edit, with progress and interruption.

One ``LoadedModel`` serves one thread at a time (a diffusers pipeline keeps per-call state such
as its interrupt flag and scheduler steps); there is no lock here, the caller runs one generation
per model at a time. Different ``LoadedModel`` objects are independent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from PIL import Image

from .aspect import edit_output_size
from .derived import DERIVED_CLASSES, Mode, derived_pipeline, steps_run
from .kinds import ModelKind
from .profiles import (
    CACHE_DIR_SETTING,
    PATH_SETTINGS,
    PROFILE_SETTING,
    QWEN21_MODEL_ID,
    QWEN21_PATH_SETTING,
    QWEN21_PIPELINE_CLASS,
    QWEN_MODEL_IDS,
    SHARED_COMPONENTS,
    TEXT_TO_IMAGE,
    TRANSPARENT_PROFILE,
    ModelInfo,
    ModelLoadError,
    Profile,
    check_kind,
)
from .seeds import MAX_SEED, resolve_seed

log = logging.getLogger(__name__)

THREADS_SETTING = "TORCH_NUM_THREADS"
MAX_IMAGES = 4
MAX_EDIT_INPUTS = 2


@dataclass
class LoadedModel:
    """A model ready to generate: the pipeline (``None`` for the sleep profile) and what it is."""

    kind: str
    info: ModelInfo
    device: str
    profile: Profile
    pipeline: Any = None
    load_seconds: float = 0.0
    # The latent→RGB map of live previews (models.preview), made on first use.
    rgb_map: Any = None

    def preview_map(self):
        """The latent→RGB map for this model's VAE (published for 16 channels, fitted otherwise)."""
        if self.rgb_map is None and self.pipeline is not None:
            from .preview import map_for_vae

            self.rgb_map = map_for_vae(self.pipeline.vae)
            log.info("%s previews: latent→RGB map %s", self.kind, self.rgb_map.source)
        return self.rgb_map

    # LoRA support (models.adapters): the adapters loaded in this pipeline, and for fast mode the
    # Lightning adapter and its scheduler (a separate instance from the pipeline's own).
    adapters: Any = None
    lightning: Any = None
    fast_scheduler: Any = None
    # Qwen-Image 2.1's fast mode: the Turbo checkpoint's transformer and sampling grid (models.tiny21
    # builds the tiny one), shared by both kinds of the one pipeline.
    turbo: Any = None
    # Image-to-image and inpainting pipelines over this pipeline's modules (models.derived), made
    # on first use: they add no weights.
    derived: dict[Mode, Any] = field(default_factory=dict)
    # Text-to-image prompt embeddings kept between runs (models.prompt_cache); None: not kept.
    prompt_cache: Any = None

    def mode(self, request: GenerationRequest) -> Mode:
        """Which of this model's pipelines runs ``request``."""
        if request.mask is not None:
            return Mode.inpaint
        if request.images and not ModelKind(self.kind).spec.takes_images:
            return Mode.image_to_image
        return Mode.base

    def modes(self) -> tuple[Mode, ...]:
        """What this model can run (``/models`` lists it)."""
        if self.profile.unified:  # QwenImage21Pipeline has no redraw (strength) and no mask input
            return (Mode.base,)
        return (Mode.base, *(mode for kind, mode in DERIVED_CLASSES if kind == self.kind))

    def pipeline_for(self, mode: Mode) -> Any:
        if mode is Mode.base or self.pipeline is None:
            return self.pipeline
        if mode not in self.derived:
            self.derived[mode] = derived_pipeline(self.pipeline, DERIVED_CLASSES[(self.kind, mode)])
        return self.derived[mode]

    def describe(self) -> dict[str, Any]:
        """How this model is loaded: what ``/health`` and ``/models`` report."""
        profile = self.profile
        return {
            "name": self.info.name,
            "dtype": profile.dtype,
            "quantization": "fp8" if profile.fp8 else "none",
            "offload": "model" if profile.cpu_offload else "group" if profile.group_offload else "none",
            "device": self.device,
            "step_cache": profile.step_cache,
            "compiled": profile.compile,
            "adapters_loaded": self.adapters.loaded if self.adapters is not None else [],
            "adapter_capacity": self.adapters.capacity if self.adapters is not None else 0,
            "fast_mode": self.lightning is not None or self.turbo is not None,
            "license": profile.license,
            "transparent": profile.transparent,
        }


@dataclass
class GenerationRequest:
    """One generation. ``width``/``height`` apply to text-to-image; ``images`` (1-2) to edit."""

    prompt: str
    negative_prompt: str = ""
    width: int = 1024
    height: int = 1024
    num_inference_steps: int = 50
    true_cfg_scale: float = 4.0
    guidance_scale: float = 1.0
    seed: int = -1
    num_images: int = 1
    images: list[Image.Image] = field(default_factory=list)
    # Edit only: the output's (width, height); None follows the last input (the pipeline's own rule).
    edit_size: tuple[int, int] | None = None
    # LoRA adapters (models.adapters.AdapterUse) active for this run; none: the base model.
    adapters: list[Any] = field(default_factory=list)
    # Fast mode: the model's Lightning adapter and scheduler, true CFG off.
    fast: bool = False
    # Image-to-image and inpainting (models.derived): how much of the input is redrawn (0-1; None:
    # not a redraw), and the region to repaint (white; "L" mode, the size of the first image).
    strength: float | None = None
    mask: Image.Image | None = None
    # RGBA output with a transparent background (profiles whose model draws RGBA: Qwen-Image 2.1);
    # otherwise such a model's output is composited over white.
    transparent: bool = False
    # Full-size pictures of the run decoded by the VAE (OpenAI's partial images, 0-3), sent to the
    # previews' sink.
    partial_images: int = 0

    @property
    def steps_run(self) -> int:
        """The denoising steps the run makes (fewer than asked under ``strength``)."""
        return steps_run(self.num_inference_steps, self.strength)


@dataclass
class PreviewOptions:
    """Live previews of a generation: every ``every`` steps (0: none), handed to ``sink`` (see
    models.preview); the request's ``partial_images`` go to the same ``sink``."""

    every: int
    sink: Callable[[dict], None]
    max_side: int = 512
    image_format: str = "webp"
    quality: int = 70


@dataclass
class GenerationResult:
    """What a generation produced. ``images`` is empty when it was ``interrupted``.

    With ``generate(..., defer_pixels=True)`` the decoded output is still a tensor of bytes when
    ``generate`` returns: :meth:`pixels` turns it into images (PIL conversion, resizing, the
    inpainting's overlay), work that needs no device and can run beside the next generation.
    """

    images: list[Image.Image]
    seed: int
    interrupted: bool
    steps_completed: int
    seconds: float
    finish: Callable[[], list[Image.Image]] | None = None

    def pixels(self) -> list[Image.Image]:
        """The images, made now if ``generate`` deferred them."""
        if self.finish is not None:
            self.images = self.finish()
            self.finish = None
        return self.images


def load(
    profile: Profile,
    kind: str,
    device: str | None = None,
    num_threads: int | None = None,
    share: LoadedModel | None = None,
) -> LoadedModel:
    """Load ``kind`` (``text_to_image`` or ``image_edit``) of ``profile`` onto ``device``.

    ``device`` defaults to the profile's (``cuda`` for ``qwen``, ``cpu`` otherwise); ``num_threads``
    sets torch's thread count (the ``TORCH_NUM_THREADS`` setting). Raises ``ModelLoadError`` with a
    message saying what to do when the GPU or the weights are missing.
    ``share``: another loaded model whose text encoder, tokenizer and VAE this one uses instead of
    loading its own (``models.shared`` checks first that they are the same weights).
    """
    check_kind(kind)
    started = time.perf_counter()
    device = device or profile.device
    info = profile.info(kind)
    if not profile.pipeline_classes:  # sleep, faulty: no pipeline, no torch
        return LoadedModel(kind=kind, info=info, device="none", profile=profile)
    _apply_thread_setting(num_threads)
    components = {}
    if share is not None:
        components = {name: getattr(share.pipeline, name) for name in SHARED_COMPONENTS}
    if profile.name == "tiny":
        pipeline = _load_tiny(profile, kind, device, components)
    elif profile.name == "tiny21":
        pipeline = _load_tiny21(profile, device)
    else:
        pipeline = _load_pretrained(profile, kind, device, components)
    pipeline.set_progress_bar_config(disable=True)
    model = LoadedModel(kind=kind, info=info, device=device, profile=profile, pipeline=pipeline)
    if not ModelKind(kind).spec.takes_images:
        from .prompt_cache import PromptCache

        model.prompt_cache = PromptCache()
    _prepare_speed_options(model)
    model.load_seconds = time.perf_counter() - started
    log.info("loaded %s (%s) on %s in %.1f s", info.name, kind, device, model.load_seconds)
    return model


def _prepare_speed_options(model: LoadedModel) -> None:
    """Adapters, fast mode, step caching and compilation as the profile asks (models.adapters)."""
    from . import adapters

    profile, pipeline = model.profile, model.pipeline
    model.adapters = adapters.AdapterSet(
        pipeline,
        capacity=profile.adapter_capacity + 1,  # + the Lightning adapter
        max_bytes=profile.adapter_max_mb * 1024 * 1024,
        hotswap=profile.compile,
    )
    source = None if profile.unified else _lightning_source(profile, model.kind)
    if profile.unified and profile.turbo_source:
        model.turbo = _load_turbo(profile, model.device, pipeline)
    if source is not None:
        model.lightning = adapters.AdapterUse(adapters.LIGHTNING_ADAPTER, 1.0, source)
        model.fast_scheduler = adapters.lightning_scheduler(pipeline.scheduler)
    if profile.compile:
        # Before anything else touches the transformer's layers: the hotswap slots are LoRA layers
        # the compiled graph is built with (models.adapters.AdapterSet.prepare_hotswap).
        slot_bytes = model.adapters.prepare_hotswap(profile.max_adapter_rank)
        if profile.adapter_max_mb and slot_bytes > profile.adapter_max_mb * 1024 * 1024:
            raise ModelLoadError(
                f"with compilation {model.adapters.capacity} adapter slots of rank {profile.max_adapter_rank} take "
                f"{slot_bytes / 2**20:.0f} MB, more than ADAPTER_CACHE_MB={profile.adapter_max_mb}: raise "
                f"ADAPTER_CACHE_MB, or lower ADAPTER_CACHE_SIZE or MAX_ADAPTER_RANK"
            )
    if profile.step_cache:
        try:
            adapters.enable_step_cache(pipeline, profile.step_cache, profile.step_cache_threshold)
        except ValueError as error:
            raise ModelLoadError(
                f"step cache {profile.step_cache!r} cannot be used with {model.info.name}: {error}. "
                f"Set STEP_CACHE to another mode or leave it empty."
            ) from error
    if profile.compile:
        adapters.compile_regionally(pipeline)
        # The first call compiles; made here, at load, so that no user request pays for it (the
        # replica is not ready, and /health says "starting", until it is done).
        side = profile.compile_warm_up_size
        warm_up = GenerationRequest(prompt="warm-up", num_inference_steps=2, seed=0, width=side, height=side)
        if ModelKind(model.kind).spec.takes_images:
            warm_up.images = [Image.new("RGB", (side, side))]
        started = time.perf_counter()
        generate(model, warm_up)
        log.info(
            "compiled %s's transformer blocks; warm-up took %.1f s", model.info.name, time.perf_counter() - started
        )


def _lightning_source(profile: Profile, kind: str):
    from .adapters import AdapterSource

    if profile.name == "tiny":
        from .profiles import default_tiny_cache_dir
        from .tiny_adapter import WEIGHT_NAME, ensure_tiny_lora

        cache_dir = profile.cache_dir or default_tiny_cache_dir()
        return AdapterSource("lightning", ensure_tiny_lora(kind, cache_dir, "lightning"), WEIGHT_NAME)
    if kind not in profile.lightning_sources:
        return None
    path, weight_name = profile.lightning_sources[kind]
    return AdapterSource("lightning", path, weight_name)


def generate(
    model: LoadedModel,
    request: GenerationRequest,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    previews: PreviewOptions | None = None,
    defer_pixels: bool = False,
) -> GenerationResult:
    """Run one generation with ``model``.

    ``on_step(step, total)`` is called after every denoising step (``step`` counts from 1).
    ``should_stop()`` is checked before the run and after every step; when it returns true the
    run stops after that step, without decoding, and the result has ``interrupted=True``,
    ``steps_completed`` set and no images.
    ``seed=-1`` picks a random seed; the result records the seed used.
    ``previews`` asks for live previews of the latents (pipelines only; the sleep profile has none).
    ``defer_pixels``: return once the VAE has decoded and the bytes are off the device; the
    result's :meth:`GenerationResult.pixels` makes the images (on whichever thread calls it).
    """
    _check_request(model, request)
    on_step = model.profile.hooks.before_generation(request.prompt, on_step)
    started = time.perf_counter()
    seed = resolve_seed(request.seed)
    if should_stop is not None and should_stop():
        return GenerationResult(images=[], seed=seed, interrupted=True, steps_completed=0, seconds=0.0)
    finish: Callable[[], list[Image.Image]] | None = None
    if model.pipeline is None:
        images, steps, interrupted = _sleep_generate(model, request, seed, on_step, should_stop)
    else:
        images, steps, interrupted = _pipeline_generate(
            model, request, seed, on_step, should_stop, previews, defer_pixels
        )
        if callable(images):
            finish, images = images, []
    return GenerationResult(
        images=[] if interrupted else images,
        seed=seed,
        interrupted=interrupted,
        steps_completed=steps,
        seconds=time.perf_counter() - started,
        finish=None if interrupted else finish,
    )


def _check_request(model: LoadedModel, request: GenerationRequest) -> None:
    if model.profile.unified:
        _check_unified_request(model, request)
    elif request.transparent:
        raise ValueError(
            f"{model.info.name} draws no transparent images: use the {TRANSPARENT_PROFILE} profile (Qwen-Image 2.1)"
        )
    if request.num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {request.num_inference_steps}")
    if not 1 <= request.num_images <= MAX_IMAGES:
        raise ValueError(f"num_images must be 1-{MAX_IMAGES}, got {request.num_images}")
    if request.seed > MAX_SEED:
        raise ValueError(f"seed must be at most {MAX_SEED}, got {request.seed}")  # before any work
    takes_images = ModelKind(model.kind).spec.takes_images
    most = model.profile.max_references if model.profile.unified else MAX_EDIT_INPUTS
    if takes_images and not 1 <= len(request.images) <= most:
        raise ValueError(f"image edit takes 1-{most} input images, got {len(request.images)}")
    if not takes_images and len(request.images) > 1:
        raise ValueError(f"image-to-image takes one input image, got {len(request.images)}")
    if request.strength is not None and not 0.0 < request.strength <= 1.0:
        raise ValueError(f"strength must be above 0 and at most 1, got {request.strength}")
    if request.mask is not None and (not request.images or request.mask.size != request.images[0].size):
        raise ValueError("a mask needs an input image of its own size")
    size = request.edit_size if takes_images else (request.width, request.height)
    if size is not None and (size[0] % 16 or size[1] % 16 or size[0] <= 0 or size[1] <= 0):
        raise ValueError(f"width and height must be positive multiples of 16, got {size[0]}x{size[1]}")
    if (request.adapters or request.fast) and model.pipeline is not None and model.adapters is None:
        raise ValueError("this model was loaded without adapter support")
    if request.fast and model.pipeline is not None and model.lightning is None and model.turbo is None:
        raise ValueError("this model has no fast mode (no Lightning adapter configured)")


def _check_unified_request(model: LoadedModel, request: GenerationRequest) -> None:
    """What Qwen-Image 2.1's pipeline cannot do, refused with the profile's name."""
    name = model.profile.name
    if request.mask is not None or request.strength is not None:
        raise ValueError(
            f"the {name} profile (Qwen-Image 2.1) has no image-to-image redraw (strength) or masked "
            f"inpainting; use the qwen profile, or an edit with reference images"
        )
    if not ModelKind(model.kind).spec.takes_images and request.images:
        raise ValueError(f"the {name} profile takes reference images only as an edit")


class _Stopped(Exception):
    """Raised from the step callback to leave a pipeline run that should stop."""


def _step_end(progress: dict, total: int, on_step, should_stop, watchers: list) -> Callable[..., dict]:
    """The pipeline's ``callback_on_step_end``: counts the step, reports it, shows the latents to the
    watchers (previews, partial images; None: absent) and leaves the run when it should stop."""
    watching = [watcher for watcher in watchers if watcher is not None]

    def step_end(pipe, index, timestep, tensors):
        progress["steps"] = index + 1
        if on_step is not None:
            on_step(index + 1, total)
        if "latents" in tensors:
            for watcher in watching:
                watcher.on_step(index + 1, total, tensors["latents"])
        if should_stop is not None and should_stop():
            # Leave the pipeline here: its own interrupt flag would still decode the latents.
            raise _Stopped
        return {}

    return step_end


def _preview_size(model: LoadedModel, request: GenerationRequest) -> tuple[int, int]:
    """The size of the image the run makes, which its latents have (at 1/8, or 1/16 for 2.1)."""
    takes_images = ModelKind(model.kind).spec.takes_images
    if not takes_images:
        width, height = request.width, request.height
    elif request.mask is not None:  # the edit inpainting pipeline's own size, from the (reshaped) image
        width, height = edit_output_size(*(request.edit_size or request.images[0].size))
    else:
        width, height = request.edit_size or edit_output_size(*request.images[-1].size)
    if model.profile.unified:  # the pipeline floors sizes to multiples of 32
        if takes_images and request.edit_size is None:
            width, height = qwen21_output_size(*request.images[-1].size)
        width, height = width // 32 * 32, height // 32 * 32
    return width, height


def _previewer(model: LoadedModel, request: GenerationRequest, options: PreviewOptions | None):
    if options is None or options.every <= 0:
        return None
    from .preview import LatentPreviewer

    width, height = _preview_size(model, request)
    return LatentPreviewer(
        model.preview_map(),
        width=width,
        height=height,
        patch=1 if model.profile.unified else 2,  # 2.1's latents are not patched
        every=options.every,
        sink=options.sink,
        max_side=options.max_side,
        image_format=options.image_format,
        quality=options.quality,
    )


def _partial_decoder(model: LoadedModel, pipeline: Any, request: GenerationRequest, options: PreviewOptions | None):
    """Full-size partial images by the VAE (OpenAI's ``partial_images``), whatever ``every`` is.

    The pair's pipelines only (their packed 16-channel latents): on Qwen-Image 2.1 a ``/v1`` stream
    carries the finished image(s) alone, which OpenAI's "up to" ``partial_images`` allows."""
    if options is None or request.partial_images <= 0 or model.profile.unified:
        return None
    from .preview import PartialDecoder

    width, height = _preview_size(model, request)
    return PartialDecoder(pipeline.vae, width=width, height=height, wanted=request.partial_images, sink=options.sink)


QWEN21_MIN_REFERENCE_SIDE = 512


def qwen21_output_size(width: int, height: int, resolution: int = 1024) -> tuple[int, int]:
    """Qwen-Image 2.1's output size for an edit whose last reference is ``width`` x ``height``:
    ~``resolution``² pixels in its ratio, multiples of 32 (the pipeline's ``calculate_dimensions``)."""
    import math

    ratio = width / height
    out_width = math.sqrt(resolution * resolution * ratio)
    return round(out_width / 32) * 32, round(out_width / ratio / 32) * 32


def _run_pipeline(pipeline, arguments: dict[str, Any], swap: Optional[tuple[str, Any]], closers: list[Any]):
    """``pipeline(**arguments)`` with ``swap`` (attribute, value) set for this run only: fast mode's
    scheduler (the pair) or transformer (2.1 Turbo). The previewers in ``closers`` are closed after.
    None when the run was stopped at a step."""
    kept = getattr(pipeline, swap[0]) if swap is not None else None
    if swap is not None:
        setattr(pipeline, *swap)
    try:
        return pipeline(**arguments)
    except _Stopped:
        # What the pipeline does at its end: with model CPU offload, move every component back to
        # the CPU, or the next run loads its text encoder beside a transformer still on the GPU.
        pipeline.maybe_free_model_hooks()
        return None
    finally:
        for closer in closers:
            if closer is not None:
                closer.close()
        if swap is not None:
            setattr(pipeline, swap[0], kept)


def _pipeline21_generate(model, request, seed, on_step, should_stop, previews=None):
    """One run of ``QwenImage21Pipeline``: text-to-image, or an edit with 1-N RGBA-capable references."""
    import torch

    pipeline = model.pipeline
    total = request.num_inference_steps
    turbo = model.turbo if request.fast else None
    if turbo is not None:
        total = len(turbo.sigmas)
    progress = {"steps": 0}
    previewer = _previewer(model, request, previews)
    step_end = _step_end(progress, total, on_step, should_stop, [previewer])

    generator = torch.Generator(device="cpu").manual_seed(seed)
    if model.adapters is not None:
        model.adapters.activate(list(request.adapters))
    # The model is meant to run without guidance (true_cfg_scale 1); guidance needs a negative
    # prompt (a string, "" included), and Turbo runs without it.
    cfg = 1.0 if turbo is not None else request.true_cfg_scale
    arguments: dict[str, Any] = dict(
        prompt=request.prompt,
        negative_prompt=(request.negative_prompt or "") if cfg > 1 else None,
        true_cfg_scale=cfg,
        num_inference_steps=request.num_inference_steps,
        num_images_per_prompt=request.num_images,
        generator=generator,
        callback_on_step_end=step_end,
        output_type="pil",
    )
    if turbo is not None:
        arguments.update(sigmas=list(turbo.sigmas))
    if ModelKind(model.kind).spec.takes_images:
        # RGBA references go in as they are: the pipeline composites them over white for the
        # encoder and gives the VAE all four channels (what the checkpoint was trained with).
        arguments.update(image=[i if i.mode in ("RGB", "RGBA") else i.convert("RGBA") for i in request.images])
        if request.edit_size is not None:
            # References are resized to the output's area (the pipeline's output_resolution²):
            # each costs that many tokens again. Not below 512²: Qwen3-VL's processor enlarges
            # images under 65,536 px, and the encoder's image slots would no longer match them.
            width, height = request.edit_size
            resolution = max(QWEN21_MIN_REFERENCE_SIDE, round((width * height) ** 0.5))
            arguments.update(width=width, height=height, output_resolution=resolution)
    else:
        arguments.update(width=request.width, height=request.height)
    swap = ("transformer", turbo.transformer) if turbo is not None else None
    output = _run_pipeline(pipeline, arguments, swap, [previewer])
    if output is None:
        return [], progress["steps"], True
    images = [transparent_or_flat(image, request.transparent) for image in output.images]
    return images, progress["steps"], False


def transparent_or_flat(image: Image.Image, transparent: bool) -> Image.Image:
    """An RGBA image as asked: kept (transparent), or composited over white into RGB."""
    if image.mode != "RGBA":
        return image.convert("RGBA") if transparent else image
    if transparent:
        return image
    flat = Image.new("RGB", image.size, (255, 255, 255))
    flat.paste(image, mask=image.getchannel("A"))
    return flat


@dataclass
class Turbo:
    """Qwen-Image 2.1 Turbo: its transformer and the sampling grid its checkpoint ships."""

    transformer: Any
    sigmas: list[float]
    source: str


def _load_turbo(profile: Profile, device: str, pipeline: Any) -> Turbo:
    """The Turbo checkpoint's transformer (same dtype and device as the base one) and its grid."""
    import torch
    from diffusers import QwenImage21Pipeline, QwenImage21Transformer2DModel

    source = profile.turbo_source
    if profile.name == "tiny21":
        from .profiles import default_tiny_cache_dir
        from .tiny21 import ensure_tiny21_pipeline

        source = ensure_tiny21_pipeline(profile.cache_dir or default_tiny_cache_dir(), turbo=True)
    local = os.path.isdir(source)
    try:
        config = QwenImage21Pipeline.load_config(source, cache_dir=profile.cache_dir, local_files_only=local)
        transformer = QwenImage21Transformer2DModel.from_pretrained(
            source,
            subfolder="transformer",
            cache_dir=profile.cache_dir,
            local_files_only=local,
            **{_dtype_argument(): getattr(torch, profile.dtype)},
        )
    except Exception as error:
        raise ModelLoadError(
            f"cannot load the Turbo checkpoint from {source}: {type(error).__name__}: {error}. "
            f"Point QWEN21_TURBO_PATH at the Qwen-Image 2.1 Turbo checkpoint, or set it empty for no fast mode."
        ) from error
    sigmas = config.get("sample_sigmas")
    if not sigmas:
        raise ModelLoadError(
            f"{source} has no sample_sigmas in its model_index.json: it is not the Turbo checkpoint "
            f"(set QWEN21_TURBO_PATH to it, or empty for no fast mode)"
        )
    if profile.cpu_offload:
        transformer.to("cpu")  # swapped in for fast runs; the pipeline's offload hooks move the base one
    else:
        transformer.to(device)
    if pipeline.transformer.config.in_channels != transformer.config.in_channels:
        raise ModelLoadError(f"the Turbo transformer at {source} does not fit {profile.sources[TEXT_TO_IMAGE]}")
    log.info("Qwen-Image 2.1 fast mode: Turbo transformer from %s, %d steps", source, len(sigmas))
    return Turbo(transformer=transformer, sigmas=[float(x) for x in sigmas], source=source)


def _pipeline_generate(model, request, seed, on_step, should_stop, previews=None, defer_pixels=False):
    """(images, steps, interrupted); with ``defer_pixels`` a function making the images instead."""
    import torch

    if model.profile.unified:
        return _pipeline21_generate(model, request, seed, on_step, should_stop, previews)
    mode = model.mode(request)
    pipeline = model.pipeline_for(mode)
    if model.prompt_cache is not None:
        model.prompt_cache.install(pipeline)
    total = request.steps_run
    progress = {"steps": 0}
    previewer = _previewer(model, request, previews)
    partials = _partial_decoder(model, pipeline, request, previews)
    step_end = _step_end(progress, total, on_step, should_stop, [previewer, partials])

    # A CPU generator draws the same noise whatever the device, so a seed means the same image.
    generator = torch.Generator(device="cpu").manual_seed(seed)
    transformer_config = pipeline.transformer.config
    if model.adapters is not None:
        # Every run sets its own adapters: after a load diffusers leaves only the newest active.
        model.adapters.activate(list(request.adapters) + ([model.lightning] if request.fast else []))
    arguments = dict(
        prompt=request.prompt,
        # Always a string: the pipelines run true CFG only when negative_prompt is not None,
        # and they encode "" as a real (empty) negative prompt, so the default "" keeps CFG on.
        negative_prompt=request.negative_prompt or "",
        # The Lightning adapters are distilled to run without classifier-free guidance.
        true_cfg_scale=1.0 if request.fast else request.true_cfg_scale,
        num_inference_steps=request.num_inference_steps,
        # Only guidance-distilled transformers read it; the others would just log a warning.
        guidance_scale=request.guidance_scale if transformer_config.guidance_embeds else None,
        num_images_per_prompt=request.num_images,
        generator=generator,
        callback_on_step_end=step_end,
        # Deferred: the decoded [0, 1] tensor, made into bytes below; the PIL images come later.
        output_type="pt" if defer_pixels else "pil",
    )
    if mode is not Mode.base:
        arguments.update(strength=request.strength)
    if request.mask is not None:
        arguments.update(mask_image=request.mask)
    if not ModelKind(model.kind).spec.takes_images:
        arguments.update(width=request.width, height=request.height)
        if request.images:
            arguments.update(image=request.images[0].convert("RGB"))
    else:
        # Edit output size follows the pipeline's own rule (last input's aspect ratio, ~1 MP) unless given.
        images = [image.convert("RGB") for image in request.images]
        arguments.update(image=images if len(images) > 1 else images[0])
        if request.edit_size is not None:
            arguments.update(width=request.edit_size[0], height=request.edit_size[1])
    exact_size = None
    if mode is Mode.inpaint and ModelKind(model.kind).spec.takes_images:
        # The edit inpainting pipeline repaints the first image's masked region at its own size
        # (about a megapixel in the image's ratio; it ignores width/height): a size asked for is
        # given by bringing image and mask to that shape first and the result to it after.
        image = arguments["image"][0] if isinstance(arguments["image"], list) else arguments["image"]
        arguments.update(image=image)
        if request.edit_size is not None:
            exact_size = request.edit_size
            arguments.update(
                image=image.resize(exact_size, Image.Resampling.LANCZOS),
                mask_image=request.mask.resize(exact_size, Image.Resampling.BILINEAR),
            )
            arguments.pop("width", None)
            arguments.pop("height", None)
    swap = ("scheduler", model.fast_scheduler) if request.fast else None
    output = _run_pipeline(pipeline, arguments, swap, [previewer, partials])
    if output is None:
        return [], progress["steps"], True

    def finish(images: list[Image.Image]) -> list[Image.Image]:
        if exact_size is not None:
            images = [i if i.size == exact_size else i.resize(exact_size, Image.Resampling.LANCZOS) for i in images]
        if request.mask is not None:
            images = [keep_unmasked(image, request.images[0], request.mask) for image in images]
        return images

    if not defer_pixels:
        return finish(list(output.images)), progress["steps"], False
    # What diffusers' "pil" output does (float32, x 255, round half to even, uint8), on the device,
    # so that only the bytes travel; the copy waits for the decode, not for the next generation.
    frames = (output.images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
    return (lambda: finish([Image.fromarray(frame) for frame in frames.numpy()])), progress["steps"], False


# Feathering of the mask where an inpainting meets the kept original, as a fraction of the longer
# side (4 px at 1024, AUTOMATIC1111's default mask blur).
OVERLAY_FEATHER = 4 / 1024


def keep_unmasked(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """The inpainting with the original's own pixels wherever the mask keeps them.

    An inpainting pipeline redraws the whole picture through the VAE and blends in latent space, so
    the region outside the mask comes back re-encoded (slightly changed, and for a masked edit
    possibly changed more). Here the original, at the output's size, is laid back over the
    unmasked region through the mask, feathered a few pixels so the border does not show.
    """
    from PIL import ImageFilter

    size = generated.size
    original = original.convert("RGB")
    if original.size != size:
        original = original.resize(size, Image.Resampling.LANCZOS)
    mask = mask.convert("L").resize(size, Image.Resampling.BILINEAR)
    feather = max(size) * OVERLAY_FEATHER
    if feather >= 0.5:
        mask = mask.filter(ImageFilter.GaussianBlur(feather))
    return Image.composite(generated.convert("RGB"), original, mask)


def _sleep_generate(model, request, seed, on_step, should_stop):
    total = request.steps_run
    seconds = model.profile.sleep_seconds_per_step
    steps = 0
    interrupted = False
    for step in range(1, total + 1):
        time.sleep(seconds)
        steps = step
        if on_step is not None:
            on_step(step, total)
        if should_stop is not None and should_stop():
            interrupted = True
            break
    if not ModelKind(model.kind).spec.takes_images:
        size = (request.width, request.height)
    else:
        size = request.edit_size or edit_output_size(*request.images[-1].size)
    # One colour per seed, so different seeds give visibly different results here too.
    colour = (seed & 0xFF, (seed >> 8) & 0xFF, (seed >> 16) & 0xFF)
    images = [Image.new("RGB", size, colour) for _ in range(request.num_images)]
    return images, steps, interrupted


def _fp8_config():
    """diffusers' quantization config for FP8 weight-only transformers (torchao)."""
    try:
        from diffusers import PipelineQuantizationConfig, TorchAoConfig
        from torchao.quantization import Float8WeightOnlyConfig
    except ImportError as error:
        raise ModelLoadError(
            f"FP8 needs torchao ({error}): install the GPU extra, pip install 'qwen-image-service[gpu]', "
            f"or set QUANTIZATION=none"
        ) from error
    mapping: dict[str, Any] = {"transformer": TorchAoConfig(Float8WeightOnlyConfig())}
    return PipelineQuantizationConfig(quant_mapping=mapping)


def _apply_thread_setting(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise ModelLoadError(f"{THREADS_SETTING} must be a positive integer, got {threads!r}")
    import torch

    torch.set_num_threads(threads)


def _pipeline_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def _dtype_argument() -> str:
    """diffusers 0.42 warns about ``torch_dtype``; earlier releases may not know ``dtype``."""
    import diffusers
    from packaging.version import Version

    return "dtype" if Version(diffusers.__version__).release >= (0, 42) else "torch_dtype"


def _load_tiny(profile: Profile, kind: str, device: str, components: dict):
    import torch

    from .profiles import default_tiny_cache_dir
    from .tiny import ensure_tiny_pipeline

    try:
        path = ensure_tiny_pipeline(kind, profile.cache_dir or default_tiny_cache_dir())
    except OSError as error:
        raise ModelLoadError(
            f"cannot write the tiny {kind} model under {profile.cache_dir}: {error}. "
            f"Point {CACHE_DIR_SETTING} at a writable directory."
        ) from error
    pipeline = _pipeline_class(profile.pipeline_classes[kind]).from_pretrained(
        path, local_files_only=True, **{_dtype_argument(): torch.float32}, **components
    )
    return pipeline.to(device)


def _load_tiny21(profile: Profile, device: str):
    import torch

    from .profiles import default_tiny_cache_dir
    from .tiny21 import ensure_tiny21_pipeline

    try:
        path = ensure_tiny21_pipeline(profile.cache_dir or default_tiny_cache_dir())
    except OSError as error:
        raise ModelLoadError(
            f"cannot write the tiny 2.1 model under {profile.cache_dir}: {error}. "
            f"Point {CACHE_DIR_SETTING} at a writable directory."
        ) from error
    pipeline = _pipeline_class(QWEN21_PIPELINE_CLASS).from_pretrained(
        path, local_files_only=True, **{_dtype_argument(): torch.float32}
    )
    return pipeline.to(device)


def _load_pretrained(profile: Profile, kind: str, device: str, components: dict):
    import torch

    source = profile.sources[kind]
    setting = QWEN21_PATH_SETTING if profile.unified else PATH_SETTINGS[kind]
    model_id = QWEN21_MODEL_ID if profile.unified else QWEN_MODEL_IDS[kind]
    download = (
        f"download the weights with `hf download {model_id} --local-dir /models/{model_id.split('/')[1]}` "
        f"and point {setting} at that directory"
    )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"no CUDA device for {profile.info(kind).name}: the qwen profile needs an NVIDIA GPU "
            f"(~58 GB of GPU memory per model in bfloat16, less with CPU_OFFLOAD=true). "
            f"On a machine without one, set {PROFILE_SETTING}=tiny to run the built-in tiny models."
        )
    local = profile.is_local_source(kind)
    if local and not os.path.isfile(os.path.join(source, "model_index.json")):
        raise ModelLoadError(f"no diffusers weights at {source} (model_index.json is missing): {download}")
    quantization = {"quantization_config": _fp8_config()} if profile.fp8 else {}
    try:
        pipeline = _pipeline_class(profile.pipeline_classes[kind]).from_pretrained(
            source,
            cache_dir=profile.cache_dir,
            local_files_only=local,
            **{_dtype_argument(): getattr(torch, profile.dtype)},
            **components,
            **quantization,
        )
    except Exception as error:
        reason = f"cannot load {source}: {type(error).__name__}: {error}"
        if isinstance(error, ImportError) or "torchvision" in str(error):
            # Qwen2-VL's processor (edit model) needs torchvision built for the installed torch.
            raise ModelLoadError(f"{reason}. Install the missing package (torchvision matching torch).") from error
        raise ModelLoadError(f"{reason}. If the weights are missing or incomplete: {download}") from error
    try:
        if profile.cpu_offload:
            pipeline.enable_model_cpu_offload(device=device)
        elif profile.group_offload:
            # Block by block, prefetched on a CUDA stream while the previous block computes.
            # Shared modules already carry the first pipeline's hooks.
            pipeline.enable_group_offload(
                onload_device=torch.device(device),
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=True,
                exclude_modules=list(components) or None,
            )
        else:
            pipeline.to(device)
    except torch.cuda.OutOfMemoryError as error:
        raise ModelLoadError(
            f"{profile.info(kind).name} does not fit in the memory of {device}: set CPU_OFFLOAD=true, "
            f"or give each model its own GPU (ENABLED_MODELS)"
        ) from error
    return pipeline

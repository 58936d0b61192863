"""LoRA adapters per request, the fast (Lightning) mode, step caching and regional compilation.

Everything here works on a loaded diffusers Qwen-Image pipeline (both pipelines inherit
``QwenImageLoraLoaderMixin``; adapters apply to the transformer only):

- :class:`AdapterSet` keeps up to ``capacity`` adapters loaded in one pipeline (least recently
  used evicted first, bounded in bytes too) and activates exactly a request's adapters with their
  scales before each run; a run without adapters runs the base model. After every load diffusers
  activates only the newest adapter, so the request's set is applied on every run.
- With compilation the transformer's graph must not change when adapters come and go: the set
  then works in *hotswap* mode (:meth:`AdapterSet.prepare_hotswap`, before compiling). Every slot
  is filled at load with an all-zero adapter of the highest rank allowed on every linear layer of
  the transformer blocks, and its scales become tensors (what ``enable_lora_hotswap`` prepares,
  for every slot rather than the first one loaded). All slots stay active for good; a request's
  adapters are swapped into free slots (``hotswap=True``: weights copied in place) and the
  scales are written into those tensors, 0 for a slot the request does not use. Neither the set
  of LoRA layers, nor the active adapters, nor a tensor's shape ever changes, so nothing
  recompiles; the price is memory fixed at load and every slot's (small) matmuls on every run.
- :func:`lightning_scheduler` builds the scheduler the Qwen-Image-Lightning LoRAs were distilled
  with (a separate instance: a scheduler object is never shared between pipelines or modes).
- :func:`enable_step_cache` turns on FirstBlockCache or TaylorSeer on the transformer.
- :func:`compile_regionally` compiles the repeated transformer blocks (``torch.compile`` per
  block: a much shorter cold compile than the whole model, the same steady state).

Import cost: nothing heavy at import time; torch, diffusers and peft are imported by the functions.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .profiles import STEP_CACHE_MODES

log = logging.getLogger(__name__)

MAX_ADAPTERS_PER_REQUEST = 3
MIN_SCALE = -2.0
MAX_SCALE = 2.0

# Qwen-Image-Lightning (ModelTC) was distilled with this scheduler: the base Qwen-Image config with
# base_shift = max_shift = log(3), no terminal shift, exponential time shift, dynamic shifting.
LIGHTNING_SCHEDULER_OVERRIDES: dict[str, Any] = {
    "base_shift": math.log(3),
    "max_shift": math.log(3),
    "shift_terminal": None,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}
LIGHTNING_TRUE_CFG_SCALE = 1.0
# The name the fast mode's Lightning adapter is held under in a replica (catalogue names may not take it).
LIGHTNING_ADAPTER = "lightning"


class AdapterError(ValueError):
    """An adapter cannot be used: unknown, for another model, unreadable or of the wrong format.

    The text is English, for logs. A problem a client caused also carries ``code``, the id of the
    client-facing message in the catalogue (``i18n.messages``), and ``params``, that message's
    parameters, so the service answers in the client's language.
    """

    def __init__(self, text: str, code: str | None = None, **params: object):
        super().__init__(text)
        self.code, self.params = code, params


@dataclass(frozen=True)
class AdapterSource:
    """Where one named adapter's weights are: a local ``.safetensors`` file, or a folder / hub id
    with ``weight_name`` naming the file inside it."""

    name: str
    path: str
    weight_name: str | None = None

    def size_bytes(self) -> int:
        """The weights' size on disk: a local file's, or a hub file's in the local Hugging Face cache
        (0 when unknown, e.g. a hub file not downloaded yet; the loaded size is measured after)."""
        candidate = os.path.join(self.path, self.weight_name) if self.weight_name else self.path
        try:
            return os.path.getsize(candidate)
        except OSError:
            pass
        if not self.weight_name or os.path.isabs(self.path) or self.path.count("/") != 1:
            return 0
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.path, self.weight_name)
            return os.path.getsize(cached) if isinstance(cached, str) else 0
        except Exception:  # a malformed id, an unreadable cache: no estimate
            return 0


@dataclass(frozen=True)
class AdapterUse:
    """One adapter of a request and the scale it runs at; ``source`` says where its weights are
    (the service's catalogue resolves names to sources before a request reaches a replica)."""

    name: str
    scale: float = 1.0
    source: AdapterSource | None = None


def parse_adapter_uses(text: str, default_scale: Callable[[str], float] | None = None) -> list[AdapterUse]:
    """Parse ``name:scale,name2:scale`` (a scale may be left out: the adapter's default, else 1).

    Raises :class:`AdapterError` on a malformed list, a repeated name, more than
    ``MAX_ADAPTERS_PER_REQUEST`` adapters or a scale outside ``[MIN_SCALE, MAX_SCALE]``.
    """
    uses: list[AdapterUse] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, scale_text = part.partition(":")
        name = name.strip()
        if not name:
            raise AdapterError(f"missing adapter name in {part!r}", "adapter_name_missing", part=part)
        if sep:
            try:
                scale = float(scale_text)
            except ValueError:
                raise AdapterError(
                    f"adapter {name!r}: scale {scale_text.strip()!r} is not a number",
                    "adapter_scale_not_number",
                    name=name,
                    scale=scale_text.strip(),
                ) from None
        else:
            scale = default_scale(name) if default_scale else 1.0
        if not math.isfinite(scale) or not MIN_SCALE <= scale <= MAX_SCALE:
            raise AdapterError(
                f"adapter {name!r}: scale must be between {MIN_SCALE} and {MAX_SCALE}, got {scale}",
                "adapter_scale_out_of_range",
                name=name,
                low=MIN_SCALE,
                high=MAX_SCALE,
                scale=scale,
            )
        if any(use.name == name for use in uses):
            raise AdapterError(f"adapter {name!r} is named twice", "adapter_named_twice", name=name)
        uses.append(AdapterUse(name, scale))
    if len(uses) > MAX_ADAPTERS_PER_REQUEST:
        raise AdapterError(
            f"at most {MAX_ADAPTERS_PER_REQUEST} adapters per request, got {len(uses)}",
            "adapters_too_many",
            limit=MAX_ADAPTERS_PER_REQUEST,
            count=len(uses),
        )
    return uses


class AdapterSet:
    """The adapters loaded in one pipeline: an LRU bounded in count and bytes.

    A use's weights come from its ``source``, else from ``resolve(name)``.
    Not thread-safe: the owner runs one generation at a time on the pipeline, and calls
    :meth:`activate` right before each run.

    Bytes are what the loaded LoRA tensors take in memory, measured after each load whatever the
    source (local file, upload or hub); before a load the file's size is the estimate that makes
    room. In hotswap mode the slots' memory is fixed at :meth:`prepare_hotswap` instead.
    """

    def __init__(
        self,
        pipeline: Any,
        resolve: Callable[[str], AdapterSource] | None = None,
        capacity: int = 4,
        max_bytes: int = 0,
        hotswap: bool = False,
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.pipeline = pipeline
        self.resolve = resolve
        self.capacity = capacity
        self.max_bytes = max_bytes  # 0: no byte bound
        self.hotswap = hotswap
        # name -> peft adapter name, least recently used first. Without hotswap the peft name is
        # the adapter's own; with it, the slot ("slot00", …) its weights were swapped into.
        self._loaded: OrderedDict[str, str] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._sources: dict[str, AdapterSource] = {}  # where each loaded adapter's weights came from
        # Hotswap mode. Slot names of one width are never substrings of each other (peft finds a
        # slot's tensors by substring).
        width = max(2, len(str(capacity - 1)))
        self._slots = [f"slot{i:0{width}d}" for i in range(capacity)] if hotswap else []
        self._free_slots = list(self._slots)
        self._prepared = False
        # slot -> (scaling tensor, the loaded adapter's own scaling) of every LoRA layer
        self._slot_scalings: dict[str, list[tuple[Any, float]]] = {}
        self._slot_weight: dict[str, float | None] = {}  # the weight each slot's scales now hold
        self.slot_bytes = 0  # hotswap: the memory all slots take

    @property
    def loaded(self) -> list[str]:
        """Names of the adapters in memory, least recently used first."""
        return list(self._loaded)

    @property
    def loaded_bytes(self) -> int:
        """Bytes the loaded adapters take (hotswap: the slots' fixed size)."""
        return self.slot_bytes if self.hotswap else sum(self._bytes.values())

    def prepare_hotswap(self, target_rank: int) -> int:
        """Fill every slot with an all-zero adapter of rank ``target_rank`` on every linear layer of
        the transformer blocks, activate them all at scale 0 with tensor scales; return the bytes
        the slots take. Call once, before compiling and before any :meth:`activate`.

        Later adapters of rank up to ``target_rank`` on any of those layers swap in without
        changing the graph; one of higher rank or on other layers is refused when it is loaded.
        """
        from peft import LoraConfig
        from peft.utils.hotswap import prepare_model_for_compiled_hotswap

        if not self.hotswap or self._prepared:
            raise RuntimeError("prepare_hotswap applies once, to an adapter set made with hotswap=True")
        transformer = self.pipeline.transformer
        targets = hotswap_targets(transformer)
        for slot in self._slots:
            # peft's default initialisation: lora_B is zero, so a slot changes nothing until filled.
            config = LoraConfig(r=target_rank, lora_alpha=target_rank, target_modules=targets)
            transformer.add_adapter(config, adapter_name=slot)
        transformer.set_adapters(list(self._slots), weights=[0.0] * len(self._slots))
        # Scales become tensors (changed in place from now on); ranks are target_rank already.
        prepare_model_for_compiled_hotswap(transformer, target_rank=target_rank, check_compiled="error")
        for slot in self._slots:
            self._slot_scalings[slot] = [(tensor, 0.0) for tensor in self._scaling_tensors(slot)]
            self._slot_weight[slot] = 0.0
        self.slot_bytes = sum(self._adapter_bytes(slot) for slot in self._slots)
        self._prepared = True
        log.info(
            "%d adapter slots of rank %d ready for hotswapping (%.1f MB)",
            len(self._slots),
            target_rank,
            self.slot_bytes / 2**20,
        )
        return self.slot_bytes

    def activate(self, uses: Sequence[AdapterUse]) -> None:
        """Make exactly ``uses`` active with their scales (none: the base model)."""
        if len(uses) > self.capacity:
            raise AdapterError(f"{len(uses)} adapters requested but only {self.capacity} can be loaded at once")
        if len({use.name for use in uses}) < len(uses):
            raise AdapterError(f"an adapter is named twice in {[use.name for use in uses]}")
        if self.hotswap and not self._prepared:
            raise RuntimeError("an adapter set in hotswap mode needs prepare_hotswap before use")
        keep = {use.name for use in uses}
        for use in uses:
            self._ensure_loaded(use, keep=keep)
        if self.hotswap:
            weights = {self._loaded[use.name]: use.scale for use in uses}
            for slot in self._slots:
                self._set_slot_weight(slot, weights.get(slot, 0.0))
            return
        if not uses:
            if self._loaded:
                self.pipeline.disable_lora()
            return
        self.pipeline.enable_lora()
        self.pipeline.set_adapters(
            [self._loaded[use.name] for use in uses], adapter_weights=[use.scale for use in uses]
        )

    def _ensure_loaded(self, use: AdapterUse, keep: set[str]) -> None:
        name = use.name
        source = use.source or (self.resolve(name) if self.resolve else None)
        if name in self._loaded:
            if source is None or self._sources.get(name) == source:
                self._loaded.move_to_end(name)
                return
            # The same name now means other weights (the catalogue entry was deleted and registered
            # again, or a catalogue adapter shares a name with this one): never run the old ones.
            self._evict(name)
        if source is None:
            raise AdapterError(f"unknown adapter {name!r}")
        self._make_room(1, source.size_bytes(), keep)
        slot = self._free_slots.pop(0) if self.hotswap else name
        kwargs: dict[str, Any] = {"adapter_name": slot}
        if source.weight_name:
            kwargs["weight_name"] = source.weight_name
        if self.hotswap:
            kwargs["hotswap"] = True  # every slot holds weights: replace them in place, no recompilation
        try:
            self.pipeline.load_lora_weights(source.path, **kwargs)
        except Exception as error:
            if self.hotswap:
                # The swap may have stopped half way: the slot's scales go to 0 so that whatever it
                # holds has no effect, and the slot is free again.
                self._slot_scalings[slot] = [(tensor, 0.0) for tensor in self._scaling_tensors(slot)]
                self._slot_weight[slot] = None
                self._set_slot_weight(slot, 0.0)
                self._free_slots.insert(0, slot)
            raise AdapterError(f"adapter {name!r} cannot be loaded: {type(error).__name__}: {error}") from error
        if self.hotswap:
            # The swap wrote the new adapter's own scaling into the slot's tensors: remember it, the
            # request's weight multiplies it.
            tensors = self._scaling_tensors(slot)
            self._slot_scalings[slot] = [(tensor, float(tensor)) for tensor in tensors]
            self._slot_weight[slot] = None
        self._loaded[name] = slot
        self._bytes[name] = self.slot_bytes // len(self._slots) if self.hotswap else self._adapter_bytes(slot)
        self._sources[name] = source
        if not self.hotswap:
            self._make_room(0, 0, keep)  # the measured size may exceed the estimate
        log.info("adapter %s loaded (%d in memory, %.1f MB)", name, len(self._loaded), self.loaded_bytes / 2**20)

    def _make_room(self, adding: int, incoming: int, keep: set[str]) -> None:
        """Evict the least recently used adapters not in ``keep`` until ``adding`` more adapters and
        ``incoming`` more bytes fit."""
        while self._loaded:
            over_count = len(self._loaded) + adding > self.capacity
            over_bytes = bool(
                not self.hotswap and self.max_bytes and sum(self._bytes.values()) + incoming > self.max_bytes
            )
            if not (over_count or over_bytes):
                return
            victim = next((n for n in self._loaded if n not in keep), None)
            if victim is None:
                return  # the request's own adapters exceed the bound: they run, and go first next time
            self._evict(victim)

    def _evict(self, name: str) -> None:
        slot = self._loaded.pop(name)
        self._bytes.pop(name, None)
        self._sources.pop(name, None)
        if self.hotswap:
            # The slot's weights stay in place (the compiled graph keeps its shape) at scale 0; the
            # next adapter is swapped into it.
            self._set_slot_weight(slot, 0.0)
            self._free_slots.append(slot)
        else:
            self.pipeline.delete_adapters(slot)
        log.info("adapter %s evicted", name)

    def _set_slot_weight(self, slot: str, weight: float) -> None:
        if self._slot_weight.get(slot) == weight:
            return
        for tensor, own in self._slot_scalings[slot]:
            tensor.fill_(own * weight)
        self._slot_weight[slot] = weight

    def _scaling_tensors(self, slot: str) -> list[Any]:
        from peft.tuners.lora import LoraLayer

        return [
            module.scaling[slot]
            for module in self.pipeline.transformer.modules()
            if isinstance(module, LoraLayer) and slot in module.scaling
        ]

    def _adapter_bytes(self, peft_name: str) -> int:
        """Bytes of the LoRA tensors of ``peft_name`` in the transformer."""
        marker = f".{peft_name}."
        return sum(
            parameter.numel() * parameter.element_size()
            for key, parameter in self.pipeline.transformer.named_parameters()
            if "lora_" in key and marker in key
        )


def hotswap_targets(transformer: Any) -> list[str]:
    """The linear layers of a transformer block (names relative to the block) that hotswap slots
    cover: every one, so an adapter on any of them (attention, feed-forward, modulation) fits."""
    import torch

    blocks = getattr(transformer, "transformer_blocks", None)
    if not blocks:
        raise ValueError("the transformer has no transformer_blocks to hold adapters")
    return sorted(name for name, module in blocks[0].named_modules() if isinstance(module, torch.nn.Linear))


def lightning_scheduler(base_scheduler: Any) -> Any:
    """A new ``FlowMatchEulerDiscreteScheduler`` with the Lightning LoRAs' settings on top of
    ``base_scheduler``'s configuration."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = {**dict(base_scheduler.config), **LIGHTNING_SCHEDULER_OVERRIDES}
    return FlowMatchEulerDiscreteScheduler.from_config(config)


def enable_step_cache(pipeline: Any, mode: str, threshold: float | None = None) -> None:
    """Turn on step caching on ``pipeline``'s transformer: ``first_block`` (FirstBlockCache, whose
    ``threshold`` is the relative change of the first block's output under which the rest is
    reused; needs at least two blocks) or ``taylorseer`` (TaylorSeer; ``threshold`` unused)."""
    from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig

    transformer = pipeline.transformer
    if mode == "first_block":
        blocks = len(getattr(transformer, "transformer_blocks", []))
        if blocks < 2:
            raise ValueError(
                f"first_block step caching needs a transformer with at least 2 blocks, this one has {blocks}"
            )
        _check_first_block_support(transformer)
        transformer.enable_cache(FirstBlockCacheConfig(threshold=0.05 if threshold is None else threshold))
    elif mode == "taylorseer":
        transformer.enable_cache(TaylorSeerCacheConfig())
    else:
        raise ValueError(f"unknown step cache {mode!r}; use one of {', '.join(STEP_CACHE_MODES)}")


def _check_first_block_support(transformer: Any) -> None:
    """``ValueError`` with the reason when diffusers' FirstBlockCache cannot hook this transformer's
    blocks: its hooks read each block's inputs and outputs from a registry, and diffusers 0.42.1
    registers no Qwen-Image 2.1 block (``QwenImage21TransformerBlock``)."""
    from importlib.metadata import version

    try:
        from diffusers.hooks._helpers import TransformerBlockRegistry
    except ImportError:  # another diffusers layout: enable_cache says what it says
        return
    block = type(transformer.transformer_blocks[0])
    try:
        TransformerBlockRegistry.get(block)
    except ValueError:
        raise ValueError(
            f"diffusers {version('diffusers')}'s FirstBlockCache does not support {block.__name__} "
            f"(no block metadata registered for it); use the taylorseer step cache or none"
        ) from None


# torch.compile's backend. Whether a change recompiles is decided by dynamo's guards, the same for
# every backend, so tests of that may use "aot_eager" and skip inductor's code generation (minutes on CPU).
COMPILE_BACKEND = "inductor"


def compile_regionally(pipeline: Any) -> None:
    """Compile the transformer's repeated blocks with ``torch.compile``.

    Adapters hotswapped later must have their slots prepared first (:meth:`AdapterSet.prepare_hotswap`):
    a LoRA layer added after compiling changes the graph and recompiles.
    """
    pipeline.transformer.compile_repeated_blocks(fullgraph=True, backend=COMPILE_BACKEND)


def check_lora_file(path: str, max_rank: int | None = None) -> int:
    """Check that ``path`` is a ``.safetensors`` file holding LoRA weights; return its tensor count.

    ``max_rank``: refuse an adapter of a higher rank (with compilation, the rank the hotswap slots
    hold). Reads only the header (``safetensors.safe_open`` validates its offsets against the file's
    size): never unpickles anything. Raises :class:`AdapterError` saying what is wrong.
    """
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as weights:
            keys = list(weights.keys())
            # The rank is the first dimension of the down projections (lora_A / lora_down).
            ranks = [
                weights.get_slice(key).get_shape()[0]
                for key in keys
                if any(marker in key for marker in ("lora_A", "lora_down", "lora.down"))
            ]
    except Exception as error:
        # The client's message names only the kind of error: the library's text may carry a server path.
        raise AdapterError(
            f"not a valid .safetensors file ({type(error).__name__}: {error})",
            "lora_file_unreadable",
            error=type(error).__name__,
        ) from None
    if not keys:
        raise AdapterError("the .safetensors file holds no tensors", "lora_file_no_tensors")
    if not any(marker in key for key in keys for marker in LORA_KEY_MARKERS):
        raise AdapterError(
            "the .safetensors file holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up tensors)",
            "lora_file_no_lora_weights",
        )
    if max_rank is not None and ranks and max(ranks) > max_rank:
        raise AdapterError(
            f"its rank {max(ranks)} is higher than {max_rank}, "
            f"the highest the compiled replicas take (MAX_ADAPTER_RANK)",
            "lora_rank_too_high",
            rank=max(ranks),
            max_rank=max_rank,
        )
    return len(keys)


# Names LoRA tensors carry in the formats diffusers loads (peft, kohya/ComfyUI, …).
LORA_KEY_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up")

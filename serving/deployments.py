"""The model deployments: each replica holds its loaded pipeline(s) and runs one generation at a time.

In the ``separate`` layout each model kind has its own deployment (one GPU per replica); in the
``shared`` layout one deployment (``Models``) holds every enabled kind in each replica over one
text encoder and VAE (``models.shared``), and a request of either kind waits for the device like
any other.

A request carries one prompt of one task. The replica tells the registry it started (or learns the
task was cancelled and skips it), runs the pipeline with per-step progress reports whose answers
double as the cancel flag, writes the PNGs to the result store and returns their keys.

A replica admits three requests (``max_ongoing_requests: 3``) but a lock lets only one use the
device: the others wait on the replica itself, still ``pending`` (cancellable, their input images
already read and decoded), and the next starts the moment the current one's VAE decode is done and
its bytes are off the device. The images are made from those bytes, encoded (PNG) and written on
another thread beside the next generation, and only then is the task's end reported. Three, not
two: while one result is stored and one generates, a third is already waiting, so the device never
waits for a request to travel from the registry (docs/performance.md). With one request per
replica the device would idle through PNG encoding, result writing, the reply and the router's
next pick. :mod:`serving.replica_router` sends each request to the
least busy replica so that a queued request never waits behind a busy device while another idles.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from typing import Any, Optional

import ray
from ray import serve
from ray.serve.config import RequestRouterConfig

from i18n import messages
from models.kinds import ModelKind
from serving.logs import replica_events, task_event
from serving.metrics import ModelMetrics
from serving.protocol import Cancelled, Failed, Generated, ModelOutcome, ModelRequest, Skipped
from serving.registry.actor import RegistryHandle, lookup_registry
from serving.replica_router import ROUTER_PATH
from serving.settings import SHARED_DEPLOYMENT, load_settings
from storage import open_result_store

log = logging.getLogger("qwen_image.model")

# Progress goes to the registry at most this often (and at the last step): each report is an actor
# call, and its answer is how a running task learns it was cancelled.
PROGRESS_INTERVAL_S = 0.25
# How often a replica tells the registry what it holds and its device memory (for /health).
REPLICA_REPORT_INTERVAL_S = 10.0


class ModelWorker:
    """Shared body of the model deployments: one per kind (separate layout) or one for all (shared)."""

    kinds: tuple[ModelKind, ...]

    def __init__(self, settings_dict: dict):
        import models

        self.settings = load_settings(settings_dict)
        profile = replica_profile(self.settings)
        started = time.perf_counter()
        self.kinds = tuple(kind for kind in type(self).kinds if kind.value in self.settings.enabled_models)
        threads = self.settings.torch_num_threads
        if len(self.kinds) > 1:
            from models.shared import load_shared

            loaded = load_shared(profile, num_threads=threads)
            self.models = {kind: loaded[kind.value] for kind in self.kinds}
        else:
            self.models = {kind: models.load(profile, kind.value, num_threads=threads) for kind in self.kinds}
        self.model = next(iter(self.models.values()))
        if str(self.model.device) == "cpu" and self.settings.torch_num_threads is None:
            # Ray gives fractional-CPU actors OMP_NUM_THREADS=1; a CPU pipeline should use the cores.
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
        log.info(
            "%s: loaded %s on %s in %.1f s",
            ", ".join(k.value for k in self.kinds),
            ", ".join(m.info.name for m in self.models.values()),
            self.model.device,
            time.perf_counter() - started,
        )
        if self.settings.preview_every_steps > 0:
            for loaded in self.models.values():
                if loaded.pipeline is not None:
                    loaded.preview_map()  # made now (fitted for the tiny VAE), not in the first task's time
        for loaded in self.models.values():
            if loaded.prompt_cache is not None:
                loaded.prompt_cache.max_bytes = self.settings.prompt_cache_mb * 1024 * 1024
        self.store = open_result_store(self.settings.result_store_url, self.settings.data_dir)
        self._registry: Optional[RegistryHandle] = None
        self._device = asyncio.Lock()  # one generation at a time on this replica's device
        # Per generation, perf_counter() seconds: arrived, at_lock, acquired, thread_done, released.
        self._turns: deque[dict[str, float]] = deque(maxlen=512)
        self.metrics = ModelMetrics()
        self._start_reporting()

    def _start_reporting(self) -> None:
        """Tell the registry what this replica holds, now and every ``REPLICA_REPORT_INTERVAL_S``
        (``/health`` and ``/models`` show it without a call that would queue behind generations)."""
        try:
            context = serve.get_replica_context()
        except RuntimeError:  # constructed outside Serve (tests of the class itself)
            return
        app_name, replica_id = context.app_name, context.replica_id.unique_id
        deployment = context.deployment

        def report_forever() -> None:
            while True:
                try:
                    registry = self._registry_for(app_name)
                    ray.get(
                        registry.report_replica.remote(replica_id, {"deployment": deployment, **self.info()}),
                        timeout=10,
                    )
                except Exception as exc:  # the registry is (re)starting: the next report finds it
                    log.debug("replica report failed: %r", exc)
                    self._registry = None
                time.sleep(REPLICA_REPORT_INTERVAL_S)

        threading.Thread(target=report_forever, name="replica-report", daemon=True).start()

    def info(self) -> dict:
        """What this replica holds and how (``/health`` and ``/models`` show it), with device memory."""
        return {
            "layout": self.settings.model_layout,
            "device": str(self.model.device),
            "models": {kind.value: model.describe() for kind, model in self.models.items()},
            "device_memory": device_memory(),
        }

    def _registry_for(self, app_name: str) -> RegistryHandle:
        if self._registry is None:
            self._registry = lookup_registry(app_name)
        return self._registry

    def _event(self, task: ModelRequest, event: str, level: int = logging.INFO, **fields: Any) -> None:
        task_event(
            replica_events(),
            event,
            task_id=task.task_id,
            user_id=task.user_id,
            kind=task.kind.value,
            level=level,
            attempt=task.attempt,
            index=task.index,
            **fields,
        )

    async def run(self, task: ModelRequest) -> ModelOutcome:
        registry = self._registry_for(task.app_name)
        index = task.index
        turn = {"arrived": time.perf_counter()}
        try:
            # Inputs are read and decoded before the device is ours (in a thread when there are any).
            request = await asyncio.to_thread(self._request, task) if task.input_keys else self._request(task)
        except Exception as exc:
            self._event(task, "inputs_unreadable", logging.ERROR, exc_info=True)
            return Failed(index=index, error=describe_failure(exc))
        turn["at_lock"] = time.perf_counter()
        async with self._device:
            turn["acquired"] = time.perf_counter()
            self._event(task, "generation_started")
            # The pipeline starts without waiting for the registry to record the start; a "no"
            # (cancelled while it waited, or superseded) stops it at its first step.
            started = registry.mark_running.remote(*task.stamp)
            abandoned = threading.Event()
            work = asyncio.ensure_future(
                asyncio.to_thread(self._generate, task, request, registry, started, abandoned, turn)
            )
            failure: Optional[Exception] = None
            try:
                result = await asyncio.shield(work)
            except asyncio.CancelledError:
                # The thread cannot be stopped: it stops at its next step, and the device stays
                # taken until it has (however often this is cancelled), so that two generations
                # never share it.
                abandoned.set()
                await _outlast_cancellation(work)
                raise
            except Exception as exc:  # the task fails; the replica keeps serving
                failure = exc
                release_accelerator_memory()
            if not await started:
                self._event(task, "generation_skipped")
                return Skipped(index=index)
        # The device is free for the next request from here on.
        turn["released"] = time.perf_counter()
        self._turns.append(turn)
        if failure is not None:
            self._event(task, "generation_failed", logging.ERROR, exc_info=failure)
            return Failed(index=index, error=describe_failure(failure))
        if result.interrupted:
            self._event(task, "generation_cancelled", steps=result.steps_completed)
            return Cancelled(index=index)
        self.metrics.generated(task.kind.value, result.steps_completed, result.seconds)
        try:
            keys = await asyncio.to_thread(self._store_images, task, request, result)
        except OSError as exc:  # the store's ResultStoreError, or a failed write on the way
            self._event(task, "result_write_failed", logging.ERROR, error=str(exc))
            return Failed(
                index=index,
                error=messages.without_server_paths(f"{messages.RESULT_WRITE_FAILED}: {exc.strerror or exc}"),
            )
        except Exception as exc:
            self._event(task, "result_write_failed", logging.ERROR, exc_info=True)
            return Failed(index=index, error=describe_failure(exc))
        self._event(
            task,
            "generation_finished",
            steps=result.steps_completed,
            generation_seconds=round(result.seconds, 4),
            images=len(keys),
        )
        return Generated(index=index, keys=keys, seed=result.seed, seconds=result.seconds)

    def device_timeline(self) -> list[dict[str, float]]:
        """The last generations' times on this replica (``time.perf_counter()`` seconds): when the
        request arrived, reached the device lock, acquired it, when the generation's thread ended and
        when the lock was released. ``benchmarks`` reads it to split the device's idle time."""
        return list(self._turns)

    # ------------------------------------------------------------------ the blocking parts

    def _request(self, task: ModelRequest):
        from serving.uploads import open_input

        images = [open_input(self.store.get(key)) for key in task.input_keys]
        return task.parameters.pipeline_request(task.prompt, images, _adapter_uses(task))

    def _generate(
        self,
        task: ModelRequest,
        request,
        registry: RegistryHandle,
        started: ray.ObjectRef,
        abandoned: threading.Event,
        turn: Optional[dict[str, float]] = None,
    ):
        import models

        stamp = task.stamp
        index = task.index
        answers: list[ray.ObjectRef] = [started]
        stop = False
        last_report = 0.0

        def on_step(step: int, total: int) -> None:
            nonlocal last_report
            now = time.monotonic()
            if now - last_report >= PROGRESS_INTERVAL_S or step == total:
                last_report = now
                answers.append(registry.report_progress.remote(*stamp, index, step))

        def should_stop() -> bool:
            # The answers to the start and to progress reports carry the cancel flag; never block.
            nonlocal stop, answers
            stop = stop or abandoned.is_set()
            if answers and not stop:
                ready, answers = ray.wait(answers, num_returns=len(answers), timeout=0)
                for ref in ready:
                    if ref == started:
                        stop = stop or not _answer(ref)  # False: it must not run
                    else:
                        stop = stop or ray.get(ref)  # True: cancel requested
            return stop

        def send_preview(preview: dict) -> None:
            # From the preview encoder thread; the answer is not waited for.
            registry.report_preview.remote(*stamp, index, preview)

        # every=0 (PREVIEW_EVERY_STEPS=0): no latent previews, but a /v1 stream's partial images still
        previews = models.PreviewOptions(
            every=self.settings.preview_every_steps,
            sink=send_preview,
            max_side=self.settings.preview_max_side,
            image_format=self.settings.preview_format,
            quality=self.settings.preview_quality,
        )
        try:
            return models.generate(
                self.models[task.kind],
                request,
                on_step=on_step,
                should_stop=should_stop,
                previews=previews,
                defer_pixels=self.settings.replica_overlap,
            )
        finally:
            if turn is not None:
                turn["thread_done"] = time.perf_counter()

    def _store_images(self, task: ModelRequest, request, result) -> list[str]:
        import models

        result.pixels()  # from the decoded bytes, beside the next generation
        keys = []
        for n, data in enumerate(models.encode_result(self.models[task.kind], request, result)):
            key = task.output_key or f"results/{task.task_id}/image_{task.index}_{n}.png"
            self.store.put(key, data)
            keys.append(key)
        return keys


def replica_profile(settings) -> Any:
    """The model profile a replica loads, with the memory, adapter and speed settings applied."""
    import models

    profile = models.get_profile(
        settings.model_profile,
        cache_dir=str(settings.model_cache_dir or settings.data_dir / "model_cache"),
        model_paths=settings.model_paths(),
        # OFFLOAD=model and the older CPU_OFFLOAD=true both mean model CPU offload.
        cpu_offload=settings.cpu_offload or settings.offload == "model",
        sleep_seconds_per_step=settings.sleep_seconds_per_step,
        qwen21_path=settings.qwen21_model_path,
        qwen21_turbo_path=settings.qwen21_turbo_path,
    )
    log.info("model profile %s: weights under the %s licence", profile.name, profile.license)
    if profile.pipeline_classes:
        profile = models.with_memory_options(
            profile, fp8=settings.quantization == "fp8", group_offload=settings.offload_mode == "group"
        )
        profile = models.with_speed_options(
            profile,
            adapter_capacity=settings.adapter_cache_size,
            adapter_max_mb=settings.adapter_cache_mb,
            lightning_sources=settings.lightning_sources(),
            step_cache=settings.step_cache,
            step_cache_threshold=settings.step_cache_threshold,
            compile=settings.compile_transformer,
            max_adapter_rank=settings.max_adapter_rank,
        )
    return profile


def _adapter_uses(task: ModelRequest) -> list:
    """The request's adapters as ``models.adapters`` takes them; one named by the task but gone from
    the catalogue since fails the task instead of silently running without it."""
    from models.adapters import AdapterError, AdapterSource, AdapterUse

    resolved = {ref.name: ref for ref in task.adapters}
    missing = [entry.name for entry in task.parameters.loras or [] if entry.name not in resolved]
    if missing:
        raise AdapterError(f"LoRA {', '.join(missing)} is no longer in the catalogue")
    return [
        AdapterUse(ref.name, ref.scale, AdapterSource(ref.name, ref.path, ref.weight_name)) for ref in task.adapters
    ]


async def _outlast_cancellation(work: asyncio.Future) -> None:
    """Wait for ``work`` to end even if the waiting is cancelled again; log how it failed."""
    while not work.done():
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            continue
        except Exception:
            break
    if not work.cancelled() and work.exception() is not None:
        log.error("an abandoned generation failed", exc_info=work.exception())
        release_accelerator_memory()


def _answer(ref: ray.ObjectRef) -> bool:
    """The registry's answer to a start; an unreachable registry means stop (``run`` re-raises)."""
    try:
        return bool(ray.get(ref))
    except Exception:
        return False


def release_accelerator_memory() -> None:
    """After an out-of-memory error, hand cached blocks back so the next task can fit."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe_failure(exc: BaseException) -> str:
    """A message a user can act on, without a stack trace."""
    text = messages.without_server_paths(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return messages.OUT_OF_MEMORY(error=text[:200])
    return messages.GENERATION_FAILED(error=text[:300])


# One generating, one being stored, one waiting on the lock; the least busy replica gets each request.
# Serve annotates RequestRouterConfig's ``**kwargs`` as ``dict[str, Any]`` each (meant: the whole dict).
ROUTING = RequestRouterConfig(request_router_class=ROUTER_PATH)  # type: ignore[arg-type]


def _deployment(name: str, kinds: tuple[ModelKind, ...]) -> Any:
    """The Serve deployment ``name`` whose replicas hold the models of ``kinds``."""
    worker = type(
        name,
        (ModelWorker,),
        {"kinds": kinds, "__module__": __name__, "__doc__": f"Model replica of {', '.join(k.value for k in kinds)}."},
    )
    # Module attribute under the class's own name: Ray pickles replica classes by reference.
    globals()[name] = worker
    return serve.deployment(
        name=name, max_ongoing_requests=3, graceful_shutdown_timeout_s=60, request_router_config=ROUTING
    )(worker)


# The separate layout: one deployment per kind, named as its row of the kind table says.
DEPLOYMENTS: dict[str, Any] = {kind.value: _deployment(kind.deployment, (kind,)) for kind in ModelKind}


# The shared layout: one deployment whose replicas hold every enabled kind.
SHARED = _deployment(SHARED_DEPLOYMENT, tuple(ModelKind))


def device_memory() -> Optional[dict[str, int]]:
    """Bytes of GPU memory this process has allocated and the device's total, on a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return {
        "allocated_bytes": torch.cuda.memory_allocated(),
        "reserved_bytes": torch.cuda.memory_reserved(),
        "used_bytes": total - free,
        "total_bytes": total,
    }

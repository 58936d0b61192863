"""The model deployments: each replica holds one loaded pipeline and runs one generation at a time.

A request carries one prompt of one task. The replica tells the registry it started (or learns the
task was cancelled and skips it), runs the pipeline with per-step progress reports whose answers
double as the cancel flag, writes the PNGs to the result store and returns their keys.

A replica admits two requests (``max_ongoing_requests: 2``) but a lock lets only one use the
device: the second waits on the replica itself, still ``pending`` (cancellable), and starts the
moment the first one's last step is done, while the first one's PNGs are encoded and written
beside it. With one request per replica the device would idle through PNG encoding, result
writing, the reply and the router's next pick. :mod:`serving.replica_router` sends each request to the
least busy replica so that a queued request never waits behind a busy device while another idles.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from typing import Any, Optional

import ray
from ray import serve
from ray.serve.config import RequestRouterConfig

from models.kinds import ModelKind
from serving import messages
from serving.protocol import Cancelled, Failed, Generated, ModelOutcome, ModelRequest, Skipped
from serving.registry import lookup_registry
from serving.replica_router import ROUTER_PATH
from serving.settings import load_settings
from storage import open_result_store

log = logging.getLogger("qwen_image.model")

# Progress goes to the registry at most this often (and at the last step): each report is an actor
# call, and its answer is how a running task learns it was cancelled.
PROGRESS_INTERVAL_S = 0.25


class ModelWorker:
    """Shared body of the TextToImage and ImageEdit deployments."""

    kind: ModelKind

    def __init__(self, settings_dict: dict):
        import models

        self.settings = load_settings(settings_dict)
        profile = models.get_profile(
            self.settings.model_profile,
            cache_dir=str(self.settings.model_cache_dir or self.settings.data_dir / "model_cache"),
            text_to_image_path=self.settings.text_to_image_model_path,
            image_edit_path=self.settings.image_edit_model_path,
            cpu_offload=self.settings.cpu_offload,
            sleep_seconds_per_step=self.settings.sleep_seconds_per_step,
        )
        started = time.perf_counter()
        self.model = models.load(profile, self.kind.value, num_threads=self.settings.torch_num_threads)
        if str(self.model.device) == "cpu" and self.settings.torch_num_threads is None:
            # Ray gives fractional-CPU actors OMP_NUM_THREADS=1; a CPU pipeline should use the cores.
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
        log.info("%s: loaded %s on %s in %.1f s", self.kind, self.model.info.name, self.model.device,
                 time.perf_counter() - started)
        if self.settings.preview_every_steps > 0 and self.model.pipeline is not None:
            self.model.preview_map()  # made now (fitted for the tiny VAE), not in the first task's time
        self.store = open_result_store(self.settings.result_store_url, self.settings.data_dir)
        self._registry = None
        self._device = asyncio.Lock()  # one generation at a time on this replica's device

    def info(self) -> dict:
        return {"kind": self.kind.value, "name": self.model.info.name, "device": str(self.model.device)}

    def _registry_for(self, app_name: str):
        if self._registry is None:
            self._registry = lookup_registry(app_name)
        return self._registry

    async def run(self, task: ModelRequest) -> ModelOutcome:
        registry = self._registry_for(task.app_name)
        index = task.index
        try:
            # Inputs are read and decoded before the device is ours (in a thread when there are any).
            request = await asyncio.to_thread(self._request, task) if task.input_keys else self._request(task)
        except Exception as exc:
            log.exception("task %s: reading its inputs failed", task.task_id)
            return Failed(index=index, error=describe_failure(exc))
        async with self._device:
            # The pipeline starts without waiting for the registry to record the start; a "no"
            # (cancelled while it waited, or superseded) stops it at its first step.
            started = registry.mark_running.remote(*task.stamp)
            abandoned = threading.Event()
            work = asyncio.ensure_future(asyncio.to_thread(self._generate, task, request, registry, started, abandoned))
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
                return Skipped(index=index)
        # The device is free for the next request from here on.
        if failure is not None:
            log.error("task %s: generation failed", task.task_id, exc_info=failure)
            return Failed(index=index, error=describe_failure(failure))
        if result.interrupted:
            return Cancelled(index=index)
        try:
            keys = await asyncio.to_thread(self._store_images, task, request, result)
        except OSError as exc:  # the store's ResultStoreError, or a failed write on the way
            log.error("task %s: result write failed: %s", task.task_id, exc)
            return Failed(index=index, error=f"{messages.RESULT_WRITE_FAILED}: {exc.strerror or exc}")
        except Exception as exc:
            log.exception("task %s: storing the result failed", task.task_id)
            return Failed(index=index, error=describe_failure(exc))
        return Generated(index=index, keys=keys, seed=result.seed, seconds=result.seconds)

    # ------------------------------------------------------------------ the blocking parts

    def _request(self, task: ModelRequest):
        from PIL import Image

        import models

        p = task.parameters
        images = [Image.open(io.BytesIO(self.store.get(key))).convert("RGB") for key in task.input_keys]
        return models.GenerationRequest(
            prompt=task.prompt, negative_prompt=p.get("negative_prompt", ""),
            width=p.get("width", 1024), height=p.get("height", 1024),
            num_inference_steps=p["num_inference_steps"], true_cfg_scale=p["true_cfg_scale"],
            guidance_scale=p.get("guidance_scale", 1.0), seed=p["seed"], num_images=p.get("num_images", 1),
            images=images,
        )

    def _generate(self, task: ModelRequest, request, registry, started: ray.ObjectRef, abandoned: threading.Event):
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

        previews = None
        if self.settings.preview_every_steps > 0:
            previews = models.PreviewOptions(
                every=self.settings.preview_every_steps, sink=send_preview, max_side=self.settings.preview_max_side,
                image_format=self.settings.preview_format, quality=self.settings.preview_quality)
        return models.generate(self.model, request, on_step=on_step, should_stop=should_stop, previews=previews)

    def _store_images(self, task: ModelRequest, request, result) -> list[str]:
        import models

        keys = []
        for n, data in enumerate(models.encode_result(self.model, request, result)):
            key = task.output_key or f"results/{task.task_id}/image_{task.index}_{n}.png"
            self.store.put(key, data)
            keys.append(key)
        return keys


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
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return messages.OUT_OF_MEMORY(error=text[:200])
    return messages.GENERATION_FAILED(error=text[:300])


# One generating plus one waiting on the lock; the least busy replica gets each request.
ROUTING = RequestRouterConfig(request_router_class=ROUTER_PATH)


def _deployment(kind: ModelKind) -> Any:
    """The Serve deployment of one model kind, named as its row of the kind table says."""
    worker = type(kind.deployment, (ModelWorker,), {"kind": kind, "__module__": __name__,
                                                    "__doc__": f"Model replica of the {kind.value} kind."})
    # Module attribute under the class's own name: Ray pickles replica classes by reference.
    globals()[kind.deployment] = worker
    return serve.deployment(name=kind.deployment, max_ongoing_requests=2, graceful_shutdown_timeout_s=60,
                            request_router_config=ROUTING)(worker)


DEPLOYMENTS: dict[str, Any] = {kind.value: _deployment(kind) for kind in ModelKind}

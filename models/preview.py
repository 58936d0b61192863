"""Live previews of a generation: a fixed linear map from the latents to RGB, not a VAE decode.

Qwen-Image's VAE is Wan 2.1's: 16 latent channels, 8x spatial compression. The preview of the
current latents is ``rgb = latents · F + b`` per latent pixel (F: 16x3), the map ComfyUI publishes
for Wan 2.1 and uses for Qwen-Image's live previews (``comfy/latent_formats.py``, class Wan21;
the same numbers, applied to the normalised latents the transformer sees). One latent pixel gives
one preview pixel, so a 1024x1024 image previews at 128x128 (never more than ``max_side``).

Qwen-Image 2.1's VAE has 64 channels (RGBA, 16x compression; no published map) and the tiny
profiles' VAEs other counts. Its map is *fitted* when the model
loads: a few random latents are decoded by that very VAE, the decodes are averaged over each
8x8 block, and least squares gives the best linear map from latent to colour (~0.1 s). Anything
else that is not 16 channels gets a fitted map the same way.

Cost on the device's critical path: on a GPU, one small matrix product on the device and the start
of a copy of an (h/8, w/8, 3) byte tensor into pinned memory; on a CPU, one copy of the latents.
Waiting for the copy, (on a CPU) the projection, resizing and WebP/JPEG encoding happen on a
background thread. A preview still being encoded when the next is due makes that next
one skipped, never queued.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

# ComfyUI's Wan 2.1 latent→RGB factors (rows: latent channels; columns: R, G, B) and bias.
WAN21_LATENT_RGB_FACTORS = [
    [-0.1299, -0.1692, 0.2932],
    [0.0671, 0.0406, 0.0442],
    [0.3568, 0.2548, 0.1747],
    [0.0372, 0.2344, 0.1420],
    [0.0313, 0.0189, -0.0328],
    [0.0296, -0.0956, -0.0665],
    [-0.3477, -0.4059, -0.2925],
    [0.0166, 0.1902, 0.1975],
    [-0.0412, 0.0267, -0.1364],
    [-0.1293, 0.0740, 0.1636],
    [0.0680, 0.3019, 0.1128],
    [0.0032, 0.0581, 0.0639],
    [-0.1251, 0.0927, 0.1699],
    [0.0060, -0.0633, 0.0005],
    [0.3477, 0.2275, 0.2950],
    [0.1984, 0.0913, 0.1861],
]
WAN21_LATENT_RGB_BIAS = [-0.1835, -0.0868, -0.3360]

MEDIA_TYPES = {"webp": "image/webp", "jpeg": "image/jpeg"}
FIT_SAMPLES = 8
FIT_LATENT_SIZE = 8


@dataclass
class LatentRGBMap:
    """``rgb = latent · factors + bias`` (values in [-1, 1]); ``source`` says where it came from."""

    factors: list[list[float]]  # channels x 3
    bias: list[float]
    source: str

    @property
    def channels(self) -> int:
        return len(self.factors)


def published_map() -> LatentRGBMap:
    return LatentRGBMap(WAN21_LATENT_RGB_FACTORS, WAN21_LATENT_RGB_BIAS, "published Wan 2.1 / Qwen-Image factors")


def map_for_vae(vae: Any) -> LatentRGBMap:
    """The published map for a 16-channel (Qwen-Image / Wan 2.1) VAE; a fitted one otherwise."""
    z_dim = int(vae.config.z_dim)
    if z_dim == len(WAN21_LATENT_RGB_FACTORS):
        return published_map()
    return fit_map(vae)


def fit_map(vae: Any, samples: int = FIT_SAMPLES, size: int = FIT_LATENT_SIZE, seed: int = 0) -> LatentRGBMap:
    """Least-squares linear map from normalised latents to the VAE's decoded colours."""
    import torch

    config = vae.config
    z_dim = int(config.z_dim)
    parameter = next(vae.parameters())
    generator = torch.Generator(device="cpu").manual_seed(seed)
    latents = torch.randn((samples, z_dim, 1, size, size), generator=generator)
    mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(config.latents_std, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    with torch.no_grad():
        # The pipelines decode ``latents * std + mean``; the transformer works on ``latents``.
        decoded = vae.decode((latents * std + mean).to(parameter.device, parameter.dtype), return_dict=False)[0]
    # (samples, 3, k*size, k*size); an RGBA VAE's (Qwen-Image 2.1) alpha is left out
    decoded = decoded.float().cpu()[:, :3, 0]
    block = decoded.shape[-1] // size
    colours = torch.nn.functional.avg_pool2d(decoded, block)  # (samples, 3, size, size)
    x = latents[:, :, 0].permute(0, 2, 3, 1).reshape(-1, z_dim)
    y = colours.permute(0, 2, 3, 1).reshape(-1, 3)
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution  # (z_dim + 1, 3)
    return LatentRGBMap(solution[:-1].tolist(), solution[-1].tolist(), f"fitted to this {z_dim}-channel VAE")


def unpack_latents(latents: Any, width: int, height: int, patch: int = 2):
    """Qwen-Image's packed latents (B, tokens, C*4: 2x2 patches) → (B, C, height/8, width/8).

    ``patch=1``: Qwen-Image 2.1's unpatched latents (B, tokens, C), one token per 16x16 pixels.
    """
    grid_h, grid_w = height // 16, width // 16
    batch, tokens, packed = latents.shape
    if tokens != grid_h * grid_w:
        raise ValueError(f"{tokens} latent tokens do not make a {grid_w}x{grid_h} grid")
    channels = packed // (patch * patch)
    x = latents.view(batch, grid_h, grid_w, channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, channels, grid_h * patch, grid_w * patch)


def project_packed(packed: Any, rgb_map: LatentRGBMap, width: int, height: int, patch: int = 2):
    """Packed latents as a numpy array (1, tokens, C*4) → an (h, w, 3) uint8 preview, with numpy.

    ``patch=1``: Qwen-Image 2.1's unpatched (1, tokens, C) latents.
    """
    import numpy as np

    grid_h, grid_w = height // 16, width // 16
    channels = packed.shape[-1] // (patch * patch)
    if packed.shape[1] != grid_h * grid_w:
        raise ValueError(f"{packed.shape[1]} latent tokens do not make a {grid_w}x{grid_h} grid")
    # (gh, gw, C, p, p) → (gh, p, gw, p, C) → (h, w, C)
    pixels = packed[0].reshape(grid_h, grid_w, channels, patch, patch).transpose(0, 3, 1, 4, 2)
    pixels = pixels.reshape(grid_h * patch, grid_w * patch, channels)
    rgb = pixels @ np.asarray(rgb_map.factors, dtype=np.float32) + np.asarray(rgb_map.bias, dtype=np.float32)
    return np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)


class LatentPreviewer:
    """Makes a preview every ``every`` steps of one generation and hands it to ``sink``.

    ``sink(preview)`` is called on the encoder thread with ``{step, total, width, height,
    media_type, b64}``. :meth:`close` waits for the last preview (a short encode) to be handed over.
    """

    def __init__(
        self,
        rgb_map: LatentRGBMap,
        *,
        width: int,
        height: int,
        every: int,
        sink: Callable[[dict], None],
        max_side: int = 512,
        image_format: str = "webp",
        quality: int = 70,
        patch: int = 2,
    ):
        if image_format not in MEDIA_TYPES:
            raise ValueError(f"preview format must be one of {sorted(MEDIA_TYPES)}, got {image_format!r}")
        self.rgb_map = rgb_map
        self.width, self.height = width, height
        self.every = max(int(every), 1)
        self.sink = sink
        self.max_side = max_side
        self.image_format = image_format
        self.quality = quality
        self.patch = patch  # 2: Qwen-Image's 2x2-packed latents; 1: Qwen-Image 2.1's unpatched ones
        self._weights: tuple[Any, Any] | None = None
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preview")
        self._busy = threading.Event()
        self.critical_seconds: list[float] = []  # time spent in the step callback, per preview
        self.made = 0
        self.skipped = 0

    def on_step(self, step: int, total: int, latents: Any) -> None:
        """Called from the pipeline's step callback with the packed latents."""
        if step % self.every and step != total:
            return
        if step == total:
            return  # the finished image follows at once; a preview of it would only cost time
        if self._busy.is_set():
            self.skipped += 1
            return
        started = time.perf_counter()
        try:
            host, ready = self._project(latents)
        except Exception:  # a preview must never fail the generation
            log.exception("preview projection failed")
            return
        self._busy.set()
        self.critical_seconds.append(time.perf_counter() - started)
        self._encoder.submit(self._finish, host, ready, step, total)

    def _project(self, latents: Any):
        """The part on the critical path. On a GPU: the projection (a few small kernels) and an
        asynchronous copy of its bytes into pinned memory, with an event to wait on later. On a
        CPU: one plain copy of the latents; the projection happens on the encoder thread (torch's
        intra-op thread pool would make the step wait for its threads on a busy machine)."""
        import torch

        if latents.device.type != "cuda":
            return latents[:1].detach().to(torch.float32).numpy().copy(), None
        with torch.no_grad():
            if self._weights is None or self._weights[0].device != latents.device:
                factors = torch.tensor(self.rgb_map.factors, dtype=torch.float32, device=latents.device)
                bias = torch.tensor(self.rgb_map.bias, dtype=torch.float32, device=latents.device)
                self._weights = (factors, bias)
            factors, bias = self._weights
            image = unpack_latents(latents[:1].float(), self.width, self.height, self.patch)[0]  # (C, h, w)
            rgb = torch.einsum("chw,cr->hwr", image, factors) + bias
            rgb = ((rgb + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)
            host = torch.empty(rgb.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(rgb, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            return host, ready

    def _finish(self, host, ready, step: int, total: int) -> None:
        try:
            if ready is not None:
                ready.synchronize()
                rgb = host.numpy()
            else:
                rgb = project_packed(host, self.rgb_map, self.width, self.height, self.patch)
            preview = encode_preview(rgb, self.max_side, self.image_format, self.quality)
            preview.update(step=step, total=total)
            self.made += 1
            self.sink(preview)
        except Exception:
            log.exception("preview encoding failed")
        finally:
            self._busy.clear()

    def close(self) -> None:
        self._encoder.shutdown(wait=True)


def partial_is_due(step: int, total: int, sent: int, wanted: int) -> bool:
    """Partial image ``sent`` (0-based) of ``wanted`` is due once the run is (sent + 1)/(wanted + 1) done:
    partials spread over the run instead of bunching at its start."""
    return sent < wanted and total > 0 and step * (wanted + 1) >= (sent + 1) * total


class PartialDecoder:
    """A few full-size pictures of a run (OpenAI's ``partial_images``, at most 3): the current latents
    decoded by the pipeline's own VAE, at the size the image will have.

    Unlike :class:`LatentPreviewer` this is a real decode, on the critical path (one VAE decode of one
    image per partial; ``make bench`` measures it in ``preview_cost``); the JPEG encoding happens on a
    background thread. ``sink`` gets ``{step, total, width, height, media_type, b64, decoded: True}``.
    """

    def __init__(
        self, vae: Any, *, width: int, height: int, wanted: int, sink: Callable[[dict], None], quality: int = 90
    ):
        self.vae = vae
        self.width, self.height = width, height
        self.wanted = max(0, min(int(wanted), 3))
        self.sink = sink
        self.quality = quality
        self.sent = 0
        self.critical_seconds: list[float] = []
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="partial")

    def on_step(self, step: int, total: int, latents: Any) -> None:
        if step >= total or not partial_is_due(step, total, self.sent, self.wanted):
            return  # the finished image follows at once
        self.sent += 1
        started = time.perf_counter()
        try:
            rgb = decode_packed(self.vae, latents[:1], self.width, self.height)
        except Exception:  # a partial image must never fail the generation
            log.exception("partial image decode failed")
            return
        self.critical_seconds.append(time.perf_counter() - started)
        self._encoder.submit(self._finish, rgb, step, total)

    def _finish(self, rgb: Any, step: int, total: int) -> None:
        try:
            picture = encode_preview(rgb, max(self.width, self.height), "jpeg", self.quality)
            picture.update(step=step, total=total, decoded=True)
            self.sink(picture)
        except Exception:
            log.exception("partial image encoding failed")

    def close(self) -> None:
        self._encoder.shutdown(wait=True)


def decode_packed(vae: Any, latents: Any, width: int, height: int):
    """Packed latents (1, tokens, C*4) → the (height, width, 3) uint8 picture the VAE decodes them to,
    as the Qwen-Image pipelines decode their last latents (``latents * std + mean``)."""
    import torch

    config = vae.config
    z_dim = int(config.z_dim)
    parameter = next(vae.parameters())
    with torch.no_grad():
        x = unpack_latents(latents.to(parameter.device, torch.float32), width, height).unsqueeze(2)
        mean = torch.tensor(config.latents_mean, dtype=torch.float32, device=x.device).view(1, z_dim, 1, 1, 1)
        std = torch.tensor(config.latents_std, dtype=torch.float32, device=x.device).view(1, z_dim, 1, 1, 1)
        decoded = vae.decode((x * std + mean).to(parameter.dtype), return_dict=False)[0][:, :, 0]
        rgb = ((decoded[0].float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return rgb.permute(1, 2, 0).cpu().numpy()


def encode_preview(rgb: Any, max_side: int = 512, image_format: str = "webp", quality: int = 70) -> dict:
    """An (h, w, 3) uint8 array → ``{width, height, media_type, b64}``, at most ``max_side`` px long."""
    image = Image.fromarray(rgb, "RGB")
    longest = max(image.size)
    if longest > max_side:
        scale = max_side / longest
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
        )
    buffer = io.BytesIO()
    if image_format == "webp":
        image.save(buffer, format="WEBP", quality=quality, method=0)
    else:
        image.save(buffer, format="JPEG", quality=quality)
    return {
        "width": image.width,
        "height": image.height,
        "media_type": MEDIA_TYPES[image_format],
        "b64": base64.b64encode(buffer.getvalue()).decode("ascii"),
    }


__all__ = [
    "LatentRGBMap",
    "LatentPreviewer",
    "PartialDecoder",
    "partial_is_due",
    "decode_packed",
    "published_map",
    "fit_map",
    "map_for_vae",
    "unpack_latents",
    "project_packed",
    "encode_preview",
    "WAN21_LATENT_RGB_FACTORS",
    "WAN21_LATENT_RGB_BIAS",
    "MEDIA_TYPES",
]

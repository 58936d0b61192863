"""The text encoder's outputs kept per model (an LRU bounded in bytes).

A text-to-image generation with true CFG encodes two prompts, the user's and the negative one,
through the text encoder (Qwen2.5-VL-7B for Qwen-Image) before its first denoising step. The
default negative prompt is the same for most requests, and prompts come back (retries, the same
settings again, a seed sweep), so each pair (prompt, device) is encoded once and its embeddings and
mask are kept here, on the device, until bytes run out.

The cache sits in front of the text-to-image pipelines' ``_get_qwen_prompt_embeds`` (also of the
image-to-image and inpainting pipelines derived from them): the pipeline still takes prompts, and
what it does with the embeddings is unchanged. The edit pipelines encode the prompt together with
the input images, so nothing of theirs is kept. It is used under the replica's device lock (one
generation at a time), so it needs no lock of its own.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def _nbytes(value: Any) -> int:
    if value is None:
        return 0
    return int(value.numel() * value.element_size())


class PromptCache:
    """Prompt embeddings by (prompt, device, dtype), least recently used dropped first beyond ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[Any, Any, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple, encode) -> tuple[Any, Any]:
        """The cached ``encode()`` answer for ``key`` (embeddings, mask), encoding it on a miss."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0], entry[1]
        self.misses += 1
        embeds, mask = encode()
        size = _nbytes(embeds) + _nbytes(mask)
        if size <= self.max_bytes:
            self._entries[key] = (embeds, mask, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped
        return embeds, mask

    def install(self, pipeline: Any) -> None:
        """Put the cache in front of ``pipeline``'s prompt encoding (once per pipeline object)."""
        if self.max_bytes <= 0 or getattr(pipeline, "_prompt_cache", None) is self:
            return
        original = pipeline._get_qwen_prompt_embeds

        def cached(prompt=None, device=None, dtype=None):
            if not isinstance(prompt, str) and not (isinstance(prompt, list) and len(prompt) == 1):
                return original(prompt, device, dtype)
            text = prompt if isinstance(prompt, str) else prompt[0]
            key = (text, str(device), str(dtype))
            return self.get(key, lambda: original([text], device, dtype))

        pipeline._get_qwen_prompt_embeds = cached
        pipeline._prompt_cache = self

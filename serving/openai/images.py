"""Result files as OpenAI clients want them: one image per entry, in PNG, JPEG or WebP."""

from __future__ import annotations

import io
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Hashable
from typing import Optional

from PIL import Image

# OpenAI's default for output_compression: 100 (the best quality) for JPEG and WebP.
DEFAULT_COMPRESSION = 100


def split_result(data: bytes, filename: str) -> list[bytes]:
    """The PNGs of a task's result: the file itself, or the members of its ZIP in order."""
    if not filename.endswith(".zip"):
        return [data]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [archive.read(name) for name in sorted(archive.namelist(), key=_member_order)]


def _member_order(name: str) -> tuple[int, ...]:
    # image_<prompt index>_<image index>.png: numeric order, so image_0_10 follows image_0_9
    digits = [part for part in name.rsplit(".", 1)[0].split("_") if part.isdigit()]
    return tuple(int(d) for d in digits)


def convert(png: bytes, output_format: str, compression: int | None) -> bytes:
    """The PNG as it is, or re-encoded as JPEG/WebP at quality ``compression`` (0-100).

    ``output_compression`` does not apply to PNG, which is lossless (OpenAI's rule as well).
    """
    if output_format == "png":
        return png
    quality = DEFAULT_COMPRESSION if compression is None else compression
    with Image.open(io.BytesIO(png)) as image:
        # WebP keeps an RGBA image's alpha (background=transparent); JPEG has none.
        rgb = image if output_format == "webp" and image.mode == "RGBA" else image.convert("RGB")
    buffer = io.BytesIO()
    if output_format == "jpeg":
        rgb.save(buffer, format="JPEG", quality=max(quality, 1))
    else:
        rgb.save(buffer, format="WEBP", quality=quality, method=4)
    return buffer.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


class ConvertedImages:
    """Images converted for ``GET /v1/images/files/...``, most recently used kept, within ``max_bytes``.

    Converting a 1024² result to WebP takes 0.2–1 s of CPU; a URL handed to several clients (or
    fetched again) is converted once per ingress replica. Safe from the event loop and worker
    threads at once; 0 keeps nothing."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0

    def get(self, key: Hashable) -> Optional[bytes]:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: Hashable, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._size -= len(old) if old is not None else 0
            self._entries[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)

"""The result store: where generated images and uploaded inputs live, addressed by keys.

Keys look like ``results/<task_id>/generated_<task_id>.png``; the database stores keys, never
server paths, so a shared volume or an object store can back the same keys on a cluster.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class ResultStoreError(OSError):
    """A result could not be written or read."""


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid store key: {key!r}")
    return key


class ResultStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Write atomically: readers see the whole object or nothing."""

    def get(self, key: str) -> bytes:
        """Read an object; FileNotFoundError if absent."""

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix/``; returns how many."""


class LocalResultStore:
    """Files under a root directory (a local disk, or a shared volume on a cluster)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(exc, OSError):
                raise ResultStoreError(f"could not write {key}: {exc.strerror or exc}") from exc
            raise

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix)
        if not base.is_dir():
            return 0
        count = 0
        for path in sorted(base.rglob("*"), reverse=True):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
                count += 1
        base.rmdir()
        return count


class MemoryResultStore:
    """In-process store for tests and single-process tools."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[check_key(key)] = bytes(data)

    def get(self, key: str) -> bytes:
        with self._lock:
            try:
                return self._objects[check_key(key)]
            except KeyError:
                raise FileNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        with self._lock:
            return check_key(key) in self._objects

    def delete_prefix(self, prefix: str) -> int:
        base = check_key(prefix) + "/"
        with self._lock:
            doomed = [k for k in self._objects if k.startswith(base)]
            for k in doomed:
                del self._objects[k]
        return len(doomed)


def open_result_store(url: str | None, data_dir: Path | str) -> ResultStore:
    """``None`` → ``<data_dir>/store``; ``file:///path`` or a plain path; ``memory://``."""
    if not url:
        return LocalResultStore(Path(data_dir) / "store")
    if url.startswith("memory://"):
        return MemoryResultStore()
    if url.startswith("file://"):
        return LocalResultStore(url[len("file://"):])
    if "://" in url:
        raise ValueError(f"unsupported RESULT_STORE_URL scheme: {url.split('://')[0]}")
    return LocalResultStore(url)

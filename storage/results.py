"""The result store: where generated images and uploaded inputs live, addressed by keys.

Keys look like ``results/<task_id>/generated_<task_id>.png``; the database stores keys, never
server paths, so a shared volume or an object store can back the same keys on a cluster.

Backends, chosen by ``RESULT_STORE_URL`` (see :func:`open_result_store`): files under a directory
(:class:`LocalResultStore`, the default), an object store through fsspec
(:class:`FsspecResultStore`: ``s3://``, ``gs://``, ``az://`` …) and an in-process dict
(:class:`MemoryResultStore`, ``memory://``).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


# Objects are copied in pieces of this size (ZIP members, uploads of local files).
COPY_CHUNK = 256 * 1024


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

    def open(self, key: str) -> BinaryIO:
        """An object to read in pieces (a response streams it); FileNotFoundError if absent."""

    def put_path(self, key: str, path: Path | str) -> None:
        """Write a local file's content as the object, atomically, in pieces (never whole in memory)."""

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
        self._write(key, lambda fh: fh.write(data))

    def put_path(self, key: str, path: Path | str) -> None:
        def copy(fh: BinaryIO) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, fh, COPY_CHUNK)

        self._write(key, copy)

    def _write(self, key: str, fill: Any) -> None:
        """Write to a temporary file beside the object, then rename it into place."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fill(fh)
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

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

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

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self.get(key))

    def put_path(self, key: str, path: Path | str) -> None:
        self.put(key, Path(path).read_bytes())  # this store holds everything in memory anyway

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


class FsspecResultStore:
    """Objects under ``root`` on an fsspec filesystem: S3, GCS, Azure Blob, or any other fsspec knows.

    Object stores have no rename, so there is no write-then-rename: each object is written with a
    single put, which object stores make visible whole or not at all.
    """

    def __init__(self, fs: Any, root: str):
        self.fs = fs
        self.root = root.rstrip("/")

    @classmethod
    def from_url(cls, url: str, **storage_options: Any) -> FsspecResultStore:
        """``s3://bucket/prefix`` and the like; credentials come from the backend's usual
        environment variables or config files (e.g. ``AWS_ACCESS_KEY_ID``), never from the URL."""
        import fsspec

        scheme = url.split("://", 1)[0]
        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except ImportError as exc:
            raise ImportError(f"RESULT_STORE_URL {scheme}://… needs its fsspec backend package: {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"unsupported RESULT_STORE_URL scheme: {scheme} ({exc})") from exc
        return cls(fs, root)

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            self.fs.pipe_file(path, bytes(data))
        except OSError as exc:
            raise ResultStoreError(f"could not write {key}: {exc.strerror or exc}") from exc

    def put_path(self, key: str, path: Path | str) -> None:
        """An upload from the local file (multipart where the backend has it), visible once complete."""
        try:
            self.fs.put_file(str(path), self._path(key))
        except OSError as exc:
            raise ResultStoreError(f"could not write {key}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def open(self, key: str) -> BinaryIO:
        return self.fs.open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self.fs.isfile(self._path(key))

    def delete_prefix(self, prefix: str) -> int:
        paths = self.fs.find(self._path(prefix))
        if paths:
            self.fs.rm(paths)
        return len(paths)


def write_zip(store: ResultStore, key: str, members: Iterable[str]) -> None:
    """Store under ``key`` a ZIP (stored, uncompressed: PNGs do not shrink) of the objects ``members``,
    each named by the last part of its key. It is built member by member in a temporary file and
    stored from there, so neither a member nor the archive is ever whole in memory."""
    with tempfile.NamedTemporaryFile(prefix="qwen-zip-", suffix=".zip") as spool:
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:
            for member in members:
                with store.open(member) as source, archive.open(member.rsplit("/", 1)[-1], "w") as target:
                    shutil.copyfileobj(source, target, COPY_CHUNK)
        spool.flush()
        store.put_path(key, spool.name)


def open_result_store(url: str | None, data_dir: Path | str) -> ResultStore:
    """Pick the backend for ``RESULT_STORE_URL``.

    ``None`` → ``<data_dir>/store``; ``file:///path`` or a plain path → files there;
    ``memory://`` → this process's memory; any other ``scheme://`` fsspec knows (``s3://bucket/prefix``,
    ``gs://…``, ``az://…``; its backend package installed) → :class:`FsspecResultStore`.
    """
    if not url:
        return LocalResultStore(Path(data_dir) / "store")
    if url.startswith("memory://"):
        return MemoryResultStore()
    if url.startswith("file://"):
        return LocalResultStore(url[len("file://") :])
    if "://" in url:
        return FsspecResultStore.from_url(url)
    return LocalResultStore(url)

"""The result store: one contract, three backends (local files, this process's memory, fsspec)."""

from __future__ import annotations

import errno
import importlib.util
import os
import uuid
from typing import ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from storage.results import (
    FsspecResultStore,
    LocalResultStore,
    MemoryResultStore,
    ResultStoreError,
    open_result_store,
)

pytestmark = pytest.mark.unit

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


@pytest.fixture
def object_fs():
    """fsspec's in-memory filesystem under a root of this test's own (its contents are global)."""
    fs = fsspec.filesystem("memory")
    root = f"/bucket-{uuid.uuid4().hex[:8]}/results-store"
    yield fs, root
    if fs.exists(root.rsplit("/", 1)[0]):
        fs.rm(root.rsplit("/", 1)[0], recursive=True)


@pytest.fixture(params=["local", "memory", "fsspec"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalResultStore(tmp_path / "store")
    if request.param == "memory":
        return MemoryResultStore()
    fs, root = request.getfixturevalue("object_fs")
    return FsspecResultStore(fs, root)


@pytest.fixture(params=["local", "fsspec"])
def shared_stores(request, tmp_path):
    """Two store objects over the same storage: what two replicas on a cluster see."""
    if request.param == "local":
        return LocalResultStore(tmp_path / "shared"), LocalResultStore(tmp_path / "shared")
    fs, root = request.getfixturevalue("object_fs")
    return FsspecResultStore(fs, root), FsspecResultStore(fsspec.filesystem("memory"), root)


# ------------------------------------------------------------------ the contract, every backend


def test_put_then_get_returns_the_same_bytes(store):
    store.put("results/t1/generated_t1.png", PNG)
    assert store.get("results/t1/generated_t1.png") == PNG
    assert store.exists("results/t1/generated_t1.png")


def test_put_accepts_any_bytes_like_and_get_returns_bytes(store):
    store.put("inputs/t1/a.png", bytearray(b"abc"))
    store.put("inputs/t1/b.png", memoryview(b"xyz"))
    assert store.get("inputs/t1/a.png") == b"abc" and type(store.get("inputs/t1/a.png")) is bytes
    assert store.get("inputs/t1/b.png") == b"xyz"


def test_put_replaces_an_existing_object(store):
    store.put("results/t1/x.png", b"first version, longer")
    store.put("results/t1/x.png", b"second")
    assert store.get("results/t1/x.png") == b"second"


def test_empty_object_round_trips(store):
    store.put("results/t1/empty.bin", b"")
    assert store.exists("results/t1/empty.bin") and store.get("results/t1/empty.bin") == b""


def test_put_path_stores_a_local_files_content(store, tmp_path):
    local = tmp_path / "archive.zip"
    local.write_bytes(PNG * 40)  # several copy pieces
    store.put_path("results/t1/generated_t1.zip", local)
    assert store.get("results/t1/generated_t1.zip") == PNG * 40
    assert local.read_bytes() == PNG * 40  # the source is left as it was


def test_write_zip_holds_each_member_under_its_name(store):
    import io
    import zipfile

    from storage.results import write_zip

    store.put("results/t1/image_0_0.png", PNG)
    store.put("results/t1/image_1_0.png", PNG[::-1])
    write_zip(store, "results/t1/generated_t1.zip", ["results/t1/image_0_0.png", "results/t1/image_1_0.png"])
    with zipfile.ZipFile(io.BytesIO(store.get("results/t1/generated_t1.zip"))) as archive:
        assert archive.namelist() == ["image_0_0.png", "image_1_0.png"]
        assert archive.read("image_0_0.png") == PNG and archive.read("image_1_0.png") == PNG[::-1]
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_missing_object_is_file_not_found(store):
    assert not store.exists("results/none/x.png")
    with pytest.raises(FileNotFoundError):
        store.get("results/none/x.png")


def test_a_prefix_is_not_an_object(store):
    store.put("results/t1/x.png", b"1")
    assert not store.exists("results/t1")


def test_delete_prefix_removes_everything_under_it_and_counts(store):
    for key in ("results/t1/a.png", "results/t1/b.png", "results/t1/parts/c.png"):
        store.put(key, b"1")
    store.put("results/t10/a.png", b"neighbour with a longer name")
    store.put("inputs/t1/in.png", b"other tree")
    assert store.delete_prefix("results/t1") == 3
    assert not store.exists("results/t1/a.png") and not store.exists("results/t1/parts/c.png")
    with pytest.raises(FileNotFoundError):
        store.get("results/t1/b.png")
    assert store.get("results/t10/a.png") == b"neighbour with a longer name"
    assert store.get("inputs/t1/in.png") == b"other tree"


def test_delete_prefix_of_nothing_is_zero(store):
    assert store.delete_prefix("results/never") == 0
    store.put("results/t1/a.png", b"1")
    assert store.delete_prefix("results/t1") == 1
    assert store.delete_prefix("results/t1") == 0


def test_objects_can_be_written_again_after_their_prefix_was_deleted(store):
    store.put("results/t1/a.png", b"1")
    store.delete_prefix("results/t1")
    store.put("results/t1/a.png", b"2")
    assert store.get("results/t1/a.png") == b"2"


BAD_KEYS = [
    "../escape.png",
    "results/../../etc/passwd",
    "/etc/passwd",
    "results//x.png",
    "results/./x.png",
    "",
    "results/",
    "..",
    "results\\x.png",
    "results/a b.png",
    "results/ünïcode.png",
    "results/x\n.png",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_refused_by_every_operation(store, key):
    with pytest.raises(ValueError, match="invalid store key"):
        store.put(key, b"1")
    with pytest.raises(ValueError):
        store.get(key)
    with pytest.raises(ValueError):
        store.exists(key)
    with pytest.raises(ValueError):
        store.delete_prefix(key)


def test_replicas_sharing_the_storage_see_each_others_objects(shared_stores):
    writer, reader = shared_stores
    writer.put("results/t1/x.png", PNG)
    assert reader.exists("results/t1/x.png") and reader.get("results/t1/x.png") == PNG
    assert reader.delete_prefix("results/t1") == 1
    assert not writer.exists("results/t1/x.png")


# ------------------------------------------------------------------ local files


def test_local_store_keeps_objects_as_files_under_its_root(tmp_path):
    store = LocalResultStore(tmp_path / "store")
    store.put("results/t1/x.png", PNG)
    assert (tmp_path / "store" / "results" / "t1" / "x.png").read_bytes() == PNG


def test_local_put_that_fails_leaves_no_partial_file(tmp_path, monkeypatch):
    store = LocalResultStore(tmp_path / "store")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the data is written; the failure comes before the rename
    with pytest.raises(ResultStoreError, match="No space left"):
        store.put("results/t1/x.png", PNG)
    assert not store.exists("results/t1/x.png")
    assert [p.name for p in (tmp_path / "store" / "results" / "t1").iterdir()] == []


def test_local_put_that_fails_keeps_the_previous_version(tmp_path, monkeypatch):
    store = LocalResultStore(tmp_path / "store")
    store.put("results/t1/x.png", b"complete old version")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ResultStoreError):
        store.put("results/t1/x.png", PNG)
    monkeypatch.undo()
    assert store.get("results/t1/x.png") == b"complete old version"
    assert sorted(p.name for p in (tmp_path / "store" / "results" / "t1").iterdir()) == ["x.png"]


def test_result_store_error_is_an_os_error():
    assert issubclass(ResultStoreError, OSError)


def test_local_delete_prefix_removes_the_emptied_directories(tmp_path):
    store = LocalResultStore(tmp_path / "store")
    store.put("results/t1/parts/c.png", b"1")
    store.delete_prefix("results/t1")
    assert not (tmp_path / "store" / "results" / "t1").exists()
    assert (tmp_path / "store" / "results").is_dir()


# ------------------------------------------------------------------ fsspec


def test_fsspec_store_writes_one_object_per_key_under_its_root(object_fs):
    fs, root = object_fs
    FsspecResultStore(fs, root + "/").put("results/t1/x.png", PNG)
    assert fs.cat_file(f"{root}/results/t1/x.png") == PNG
    assert fs.find(root) == [f"{root}/results/t1/x.png"]  # no temporary objects left behind


def test_fsspec_put_that_fails_raises_result_store_error_and_leaves_nothing(object_fs, monkeypatch):
    fs, root = object_fs
    store = FsspecResultStore(fs, root)

    def quota_exceeded(path, value, **kwargs):
        raise OSError(errno.EDQUOT, "Quota exceeded")

    monkeypatch.setattr(fs, "pipe_file", quota_exceeded)
    with pytest.raises(ResultStoreError, match="Quota exceeded"):
        store.put("results/t1/x.png", PNG)
    assert not store.exists("results/t1/x.png")


# ------------------------------------------------------------------ choosing a backend by URL


OBJECTS_SCHEME = "qwen-test-objects"


class ObjectStoreFS(MemoryFileSystem):
    """An fsspec backend registered under a scheme of its own, as s3fs or gcsfs register theirs."""

    protocol = (OBJECTS_SCHEME,)
    store: ClassVar[dict] = {}  # its own objects, apart from the "memory" filesystem's
    pseudo_dirs: ClassVar[list[str]] = [""]

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix(f"{OBJECTS_SCHEME}://"))


fsspec.register_implementation(OBJECTS_SCHEME, ObjectStoreFS, clobber=True)


def test_no_url_means_files_under_the_data_dir(tmp_path):
    store = open_result_store(None, tmp_path)
    assert isinstance(store, LocalResultStore) and store.root == (tmp_path / "store").resolve()


def test_file_url_and_plain_path_mean_local_files(tmp_path):
    by_url = open_result_store(f"file://{tmp_path}/a", "unused")
    by_path = open_result_store(str(tmp_path / "b"), "unused")
    assert isinstance(by_url, LocalResultStore) and by_url.root == (tmp_path / "a").resolve()
    assert isinstance(by_path, LocalResultStore) and by_path.root == (tmp_path / "b").resolve()


def test_memory_url_means_this_processs_memory(tmp_path):
    assert isinstance(open_result_store("memory://", tmp_path), MemoryResultStore)


def test_an_fsspec_scheme_opens_an_fsspec_store_on_that_bucket(tmp_path):
    store = open_result_store(f"{OBJECTS_SCHEME}://bucket/prefix", tmp_path)
    assert isinstance(store, FsspecResultStore)
    store.put("results/t1/x.png", PNG)
    assert ObjectStoreFS().cat_file("/bucket/prefix/results/t1/x.png") == PNG
    assert open_result_store(f"{OBJECTS_SCHEME}://bucket/prefix", tmp_path).get("results/t1/x.png") == PNG


def test_an_unknown_scheme_is_refused_with_its_name(tmp_path):
    with pytest.raises(ValueError, match="unsupported RESULT_STORE_URL scheme: nosuchstore"):
        open_result_store("nosuchstore://bucket/prefix", tmp_path)


# gs://, since the dev extra installs s3fs (the cluster test's S3)
@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed here")
def test_an_object_store_without_its_backend_package_says_which_package(tmp_path):
    with pytest.raises(ImportError, match="gcsfs"):
        open_result_store("gs://bucket/prefix", tmp_path)

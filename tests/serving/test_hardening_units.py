"""Unit properties from the audit: no server paths in task errors, credentials never in Serve's config."""

from __future__ import annotations

import asyncio

import pytest

from i18n.messages import without_server_paths
from serving.app import build_app
from serving.deployments import describe_failure
from serving.settings import load_settings


def test_task_errors_do_not_carry_absolute_server_paths():
    error = FileNotFoundError(2, "No such file or directory", "/srv/qwen/data/model_cache/tiny/model.safetensors")
    message = describe_failure(error)
    assert "/srv/qwen" not in message and "model.safetensors" in message
    assert without_server_paths("write failed: /var/lib/qwen/store/results/a.png.tmp") == "write failed: …/a.png.tmp"


@pytest.mark.parametrize("url", ["s3://AKIA:secret@bucket/prefix", "az://container/p?sig=token"])
def test_a_result_store_url_with_credentials_is_never_a_builder_arg_nor_in_servess_config(url, monkeypatch):
    with pytest.raises(ValueError, match="result_store_url"):
        build_app({"result_store_url": url, "model_profile": "sleep"})
    monkeypatch.setenv("RESULT_STORE_URL", url)
    settings = load_settings({"model_profile": "sleep"})
    assert settings.result_store_url == url  # each process still reads it from its environment
    assert "result_store_url" not in settings.public_dict()


def test_a_result_store_url_without_credentials_may_be_a_builder_arg():
    settings = load_settings({"result_store_url": "s3://bucket/prefix"})
    assert settings.public_dict()["result_store_url"] == "s3://bucket/prefix"


def test_a_result_is_streamed_from_the_store_not_read_whole(tmp_path):
    """Finding 6: results and ZIPs used to be read into memory whole and sent in one piece."""
    import asyncio
    from types import SimpleNamespace

    from fastapi.responses import StreamingResponse

    from serving.protocol import ResultLocation
    from serving.routes.common import RESULT_CHUNK, result_response
    from storage.results import LocalResultStore

    store = LocalResultStore(tmp_path)
    payload = bytes(range(256)) * (3 * RESULT_CHUNK // 256 + 7)
    store.put("results/t/generated_t.zip", payload)
    location = ResultLocation(result_path="results/t/generated_t.zip", result_filename="generated_t.zip")

    async def read() -> tuple[StreamingResponse, list[bytes]]:
        response = await result_response(SimpleNamespace(store=store), "t", "completed", None, location, 7)
        return response, [chunk async for chunk in response.body_iterator]

    response, chunks = asyncio.run(read())
    assert isinstance(response, StreamingResponse)
    assert response.headers["content-length"] == str(len(payload))
    assert response.media_type == "application/zip"
    assert len(chunks) > 1 and max(map(len, chunks)) <= RESULT_CHUNK and b"".join(chunks) == payload


def test_a_users_pending_limit_is_a_429_with_retry_after():
    from serving.protocol import PendingLimit
    from serving.routes.common import refusal

    refused = refusal(PendingLimit(limit=3, retry_after=10))
    assert refused.status_code == 429 and "3" in refused.detail and refused.headers["Retry-After"] == "10"


# ------------------------------------------------------------ finding 5


class _StuckRegistryHandle:
    """Stands in for the registry actor's handle when the registry is stuck on a slow database: no call returns."""

    def __getattr__(self, name):
        class _Method:
            def remote(self, *args):
                return asyncio.get_running_loop().create_future()

        return _Method()


def test_a_registry_that_does_not_answer_is_a_503_not_a_hang():
    import asyncio as _asyncio

    from fastapi import HTTPException

    from serving.registry_client import RegistryClient

    client = RegistryClient(_StuckRegistryHandle(), "stuck", timeout_s=0.2)

    async def call():
        return await _asyncio.wait_for(client.queue(), 10)  # before: no timeout at all, so this guard fired

    with pytest.raises(HTTPException) as refused:
        _asyncio.run(call())
    assert refused.value.status_code == 503 and refused.value.headers["Retry-After"]


@pytest.mark.timeout(30)
def test_health_says_degraded_when_the_registry_does_not_answer(tmp_path):
    from serving.registry_client import RegistryClient
    from tests.inprocess.conftest import make_client

    with make_client(tmp_path) as client:
        client.app.state.service.registry = RegistryClient(_StuckRegistryHandle(), "stuck", timeout_s=60)
        body = client.get("/health").json()
    assert body["status"] == "degraded" and body["task_registry"] == "unresponsive"


@pytest.mark.timeout(60)
def test_a_postgresql_server_that_never_answers_fails_the_connection_instead_of_hanging():
    """A TCP peer that accepts and then says nothing, like a server stuck or behind a dead link."""
    import socket
    import threading

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from storage import make_engine

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    engine = make_engine(f"postgresql+psycopg://u:p@127.0.0.1:{silent.getsockname()[1]}/db")
    try:
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
        silent.close()


@pytest.mark.timeout(120)
def test_health_says_degraded_when_the_postgresql_server_is_down(tmp_path):
    """Finding 5: with the database away, /health answered only after the registry's database calls
    (or never); it now probes the database itself, within its 2 s, and says ``degraded``. A real
    PostgreSQL server, stopped at once."""
    from tests.inprocess.conftest import make_client
    from tests.pg import start_server

    server = start_server()
    try:
        with make_client(tmp_path, database_url=server.url(server.create_schema())) as client:
            before = client.get("/health").json()
            server.halt()
            during = client.get("/health").json()
    finally:
        server.stop()
    assert before["database"] == "up" and before["task_registry"] == "up"
    assert during["status"] == "degraded" and during["database"] == "unreachable"
    assert during["task_registry"] == "up"  # the registry's own loop still answers

"""Pieces of the command-line client that need no service: the event-stream reader, where
credentials come from, and the config file's permissions."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import httpx
import pytest

from cli.client import ApiError, Client, Credentials, _event_update, config_path, resolve, write_config
from cli.main import _download

pytestmark = pytest.mark.unit


STREAM = "\n".join(
    [
        ": keep-alive",
        "",
        "id: 1",
        "event: queued",
        'data: {"task_id": "t", "position": 2}',
        "",
        "event: progress",
        'data: {"task_id": "t",',
        'data: "percent": 50.0, "current_step": 10, "total_steps": 20}',
        "",
        "event: broken",
        "data: {",
        "",
        "event: completed",
        'data: {"task_id": "t", "seed": 7}',
        "",
        "",
    ]
)


def client_answering(handler) -> Client:
    """A client whose HTTP goes to ``handler`` (a fake transport: no service, to isolate the stream reader)."""
    client = Client(Credentials(url="http://service", token=None))
    client.http = httpx.Client(base_url="http://service", transport=httpx.MockTransport(handler))
    return client


def test_the_event_stream_gives_updates_in_order_and_skips_comments_and_broken_events():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/tasks/t/events" and request.headers["accept"] == "text/event-stream"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=STREAM.encode())

    updates: list[dict] = []
    final = client_answering(handler).follow("t", updates.append)
    assert updates == [
        {"status": "pending", "position": 2},
        {"status": "running", "percent": 50.0, "current_step": 10, "total_steps": 20},
        {"status": "completed", "percent": 100.0, "seed": 7},
    ]
    assert final == updates[-1]


def test_without_an_event_stream_the_client_polls_the_task():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(200, json={"status": "completed", "seed": 3, "progress": {"percent": 100.0}})

    updates: list[dict] = []
    assert client_answering(handler).follow("t", updates.append)["seed"] == 3
    assert [update["status"] for update in updates] == ["completed"]


def test_events_map_to_updates_and_previews_are_ignored():
    assert _event_update("queued", {"position": 3}) == {"status": "pending", "position": 3}
    assert _event_update("completed", {"seed": 5})["status"] == "completed"
    assert _event_update("preview", {"b64": "…"}) is None


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_IMAGE_CONFIG", str(tmp_path / "sub" / "config.json"))
    monkeypatch.delenv("QWEN_IMAGE_URL", raising=False)
    monkeypatch.delenv("QWEN_IMAGE_API_KEY", raising=False)
    return tmp_path / "sub" / "config.json"


def test_config_file_is_owner_only_even_when_it_existed_wider(config):
    config.parent.mkdir()
    config.write_text("{}")
    config.chmod(0o644)
    write_config({"url": "http://a", "token": "t"})
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and config_path() == config


def test_flags_win_over_environment_over_file(config, monkeypatch):
    write_config({"url": "http://file/", "token": "file-token"})
    assert (resolve(None, None).url, resolve(None, None).token) == ("http://file", "file-token")
    monkeypatch.setenv("QWEN_IMAGE_URL", "http://env")
    monkeypatch.setenv("QWEN_IMAGE_API_KEY", "env-key")
    assert (resolve(None, None).url, resolve(None, None).token) == ("http://env", "env-key")
    assert (resolve("http://flag", "flag-key").url, resolve("http://flag", "flag-key").token) == (
        "http://flag",
        "flag-key",
    )


class _HostileService:
    """A stand-in for a service that answers a path as a task id (a fake: the real one never does)."""

    def __init__(self):
        self.requests: list[str] = []

    def request(self, method, path, **kwargs):
        self.requests.append(path)
        return httpx.Response(200, content=b"\x89PNG...", headers={"content-type": "image/png"})


@pytest.mark.parametrize("task_id", ["../../.bashrc", "/etc/cron.d/x", "a" * 36, "", None, "..", "x/y"])
def test_a_task_id_not_of_the_services_form_is_never_used_as_a_file_name(tmp_path, monkeypatch, task_id):
    monkeypatch.chdir(tmp_path)
    service = _HostileService()
    with pytest.raises(ApiError):
        _download(service, task_id, None)
    assert service.requests == [] and list(tmp_path.rglob("*")) == []


def test_a_well_formed_task_id_names_the_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task_id = str(uuid.uuid4())
    path, _ = _download(_HostileService(), task_id, None)
    assert path == Path(f"{task_id}.png") and (tmp_path / path).exists()

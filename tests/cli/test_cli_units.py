"""Pieces of the command-line client that need no service: the event-stream reader, where
credentials come from, and the config file's permissions."""

from __future__ import annotations

import re
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.client import ApiError, Client, Credentials, _event_update, config_path, resolve, write_config
from cli.main import _download, app
from tests.api.helpers import image_bytes

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
        {"status": "completed", "percent": 100.0, "seed": 7, "generation_seconds": None},
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


# ------------------------------------------------------------------ img2img and masked edits: options


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Runs the command in-process against an address nothing listens on: a check that let a bad
    option through would end in exit 6 (unreachable), not 2."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QWEN_IMAGE_CONFIG", str(tmp_path / "config.json"))
    monkeypatch.setenv("QWEN_IMAGE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("QWEN_IMAGE_API_KEY", "a-key")
    (tmp_path / "in.png").write_bytes(image_bytes(size=(64, 48)))
    (tmp_path / "mask.png").write_bytes(image_bytes(size=(64, 48), color=(255, 255, 255)))

    def run(*args: str):
        return CliRunner().invoke(app, list(args))

    return run


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--extend-to", "16:9", "--extend-left", "64"], "--extend-to"),
        (["--extend-to", "wide"], "--extend-to"),
        (["--mask", "mask.png", "--extend-top", "32"], "--mask"),
        (["--mask", "mask.png", "--extend-to", "4:3"], "--mask"),
        (["--ratio", "5:4"], "--ratio"),
        (["--width", "512"], "--width"),
        (["--ratio", "1:1", "--width", "512", "--height", "512"], "--ratio"),
        (["--strength", "0"], "--strength"),
        (["--strength", "1.5"], "--strength"),
        (["--extend-left", "-16"], "--extend-left"),
        (["--mask", "missing.png"], "--mask"),
    ],
)
def test_img2img_refuses_contradictory_or_invalid_options_before_calling_the_service(run_cli, args, named):
    done = run_cli("img2img", "in.png", "a door", *args)
    assert done.exit_code == 2, done.output
    assert named in done.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["in.png", "in.png", "compose", "--mask", "mask.png"], "--mask"),
        (["in.png", "greener", "--strength", "0.5"], "--strength"),
        (["in.png", "greener", "--mask", "mask.png", "--strength", "0"], "--strength"),
    ],
)
def test_edit_takes_a_mask_with_one_image_and_strength_only_with_a_mask(run_cli, args, named):
    done = run_cli("edit", *args)
    assert done.exit_code == 2, done.output
    assert named in done.output


def test_img2img_sends_only_the_fields_given(run_cli, monkeypatch):
    """The form that leaves the command (a fake transport in place of the service, to see the
    request): zero sides and unset options are not sent, since the service refuses fields it
    does not expect and would read ``extend_left=0`` beside ``extend_to`` as a contradiction."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"task_id": str(uuid.uuid4()), "status": "pending"})

    monkeypatch.setattr("cli.main._client", lambda ctx: client_answering(handler))
    done = run_cli("img2img", "in.png", "wider", "--extend-to", "16:9", "--strength", "0.8", "--no-wait")
    assert done.exit_code == 0, done.output
    (request,) = seen
    assert request.url.path == "/image-to-image"
    body = request.content.decode("latin-1")
    names = set(re.findall(r'; name="([^"]+)"', body))
    assert names == {"prompt", "seed", "num_images", "negative_prompt", "strength", "extend_to", "image"}
    assert 'name="extend_to"\r\n\r\n16:9' in body and 'name="strength"\r\n\r\n0.8' in body


@pytest.mark.parametrize("command", ["login", "register"])
def test_a_wrong_url_is_said_before_a_password_is_asked_for(run_cli, monkeypatch, command):
    monkeypatch.delenv("QWEN_IMAGE_API_KEY")
    result = run_cli(command)  # no input: a prompt would read end-of-file and abort instead
    assert result.exit_code == 6, result.output
    assert "username" not in result.output
    assert "cannot reach http://127.0.0.1:9" in result.output and "QWEN_IMAGE_URL" in result.output

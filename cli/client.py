"""The HTTP side of the command-line client: where the service is, who we are, and the calls."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import httpx
from httpx_sse import ServerSentEvent, connect_sse

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = {"completed", "failed", "cancelled"}


class ApiError(Exception):
    """A refusal from the service (its ``detail``) or no answer at all (status 0)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


# What the service's task ids look like (UUID 4): a download is named after one, so an id that is
# anything else (``../.bashrc``) is refused rather than written to.
TASK_ID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def checked_task_id(value: object) -> str:
    """``value`` when it is a task id of the form the service gives out; else an ApiError."""
    if not isinstance(value, str) or not TASK_ID_PATTERN.match(value):
        raise ApiError(0, f"the service answered an unexpected task id: {str(value)[:80]!r}")
    return value


def config_path() -> Path:
    """``$QWEN_IMAGE_CONFIG``, else ``$XDG_CONFIG_HOME/qwen-image/config.json`` (~/.config by default)."""
    explicit = os.environ.get("QWEN_IMAGE_CONFIG")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "qwen-image" / "config.json"


def read_config() -> dict[str, Any]:
    path = config_path()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ApiError(0, f"cannot read {path}: {exc}") from None


def write_config(values: dict[str, Any]) -> Path:
    """Writes the config file readable by its owner only (0600): it holds a credential."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file existed with wider permissions
    with os.fdopen(fd, "w") as out:
        json.dump(values, out, indent=2)
    return path


@dataclass
class Credentials:
    url: str
    token: Optional[str]


def resolve(url: Optional[str], api_key: Optional[str]) -> Credentials:
    """Flags first, then ``QWEN_IMAGE_URL`` / ``QWEN_IMAGE_API_KEY``, then the file ``login`` wrote."""
    config = read_config()
    return Credentials(
        url=(url or os.environ.get("QWEN_IMAGE_URL") or config.get("url") or DEFAULT_URL).rstrip("/"),
        token=api_key or os.environ.get("QWEN_IMAGE_API_KEY") or config.get("token"),
    )


class Client:
    """Thin wrapper over httpx: bearer auth, ``Accept-Language``, errors as :class:`ApiError`."""

    def __init__(self, credentials: Credentials, language: str = "en", timeout: float = 60.0):
        headers = {"Accept-Language": language, "User-Agent": "qwen-image-cli"}
        if credentials.token:
            headers["Authorization"] = f"Bearer {credentials.token}"
        self.http = httpx.Client(base_url=credentials.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                0, f"cannot reach {self.http.base_url}: {exc} (is the service running there? --url or QWEN_IMAGE_URL)"
            ) from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # ------------------------------------------------------------ tasks

    def follow(self, task_id: str, on_update: Callable[[dict], None], poll_interval: float = 0.5) -> dict:
        """Reports a task's progress until it ends; returns its final state.

        Uses the event stream ``GET /tasks/{id}/events`` and falls back to polling
        ``GET /tasks/{id}`` where the service has no such route (404) or the stream breaks.
        """
        try:
            final = self._follow_events(task_id, on_update)
            if final is not None:
                return final
        except ApiError as exc:
            if exc.status not in (404, 405):
                raise
        except httpx.HTTPError:
            pass
        return self._follow_polling(task_id, on_update, poll_interval)

    def _follow_events(self, task_id: str, on_update: Callable[[dict], None]) -> Optional[dict]:
        timeout = httpx.Timeout(30.0, read=60.0)  # the service sends a keep-alive every 15 s
        with connect_sse(
            self.http, "GET", f"/tasks/{task_id}/events", params={"previews": "false"}, timeout=timeout
        ) as events:
            response = events.response
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, _detail(response))
            for event in events.iter_sse():  # a stream of another content type raises SSEError, an HTTPError
                data = _event_data(event)
                update = None if data is None else _event_update(event.event, data)
                if update is None:
                    continue
                on_update(update)
                if update["status"] in TERMINAL:
                    return update
        return None  # the stream ended early: poll for the rest

    def _follow_polling(self, task_id: str, on_update: Callable[[dict], None], interval: float) -> dict:
        while True:
            body = self.json("GET", f"/tasks/{task_id}")
            progress = body.get("progress") or {}
            update = {
                "status": body["status"],
                "position": body.get("position_in_queue"),
                "percent": progress.get("percent"),
                "current_step": progress.get("current_step"),
                "total_steps": progress.get("total_steps"),
                "seed": body.get("seed"),
                "error": body.get("error"),
            }
            on_update(update)
            if body["status"] in TERMINAL:
                return update
            time.sleep(interval)


def _event_update(name: str, data: dict) -> Optional[dict]:
    if name == "queued":
        return {"status": "pending", "position": data.get("position")}
    if name == "started":
        return {"status": "running", "position": 0}
    if name == "progress":
        return {
            "status": "running",
            "percent": data.get("percent"),
            "current_step": data.get("current_step"),
            "total_steps": data.get("total_steps"),
        }
    if name == "completed":
        return {
            "status": "completed",
            "percent": 100.0,
            "seed": data.get("seed"),
            "generation_seconds": data.get("generation_seconds"),
        }
    if name == "failed":
        return {"status": "failed", "error": data.get("error")}
    if name == "cancelled":
        return {"status": "cancelled"}
    return None  # previews and unknown events


def _event_data(event: ServerSentEvent) -> Optional[dict]:
    """An event's JSON data object; None for an event without data or with data that is not one."""
    if not event.data:
        return None
    try:
        data = event.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        if "detail" in body:
            detail = body["detail"]
            return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
        if isinstance(body.get("error"), dict) and "message" in body["error"]:
            return str(body["error"]["message"])
    return f"HTTP {response.status_code}"

"""A small server-sent events reader for API tests (real HTTP through the Serve proxy)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx


@dataclass
class Event:
    id: int
    event: str
    data: dict
    at: float = field(default_factory=time.monotonic)


COMMENT = ":comment"


def read_events(response: httpx.Response, comments: bool = False) -> Iterator[Event]:
    """Events of an open ``text/event-stream`` response, as they arrive; with ``comments``, comment
    lines too (as events named ``:comment``)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "event" in fields:
                yield Event(int(fields.get("id", 0)), fields["event"], json.loads(fields.get("data", "{}")))
            fields = {}
        elif line.startswith(":"):
            if comments:
                yield Event(0, COMMENT, {"text": line})
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


def collect(
    client: httpx.Client,
    path: str,
    headers: dict,
    *,
    until: Callable[[Event], bool] = lambda e: False,
    timeout: float = 120,
    **params,
) -> list[Event]:
    """Every event of a stream until it ends (or ``until`` is true of one)."""
    got: list[Event] = []
    with client.stream("GET", path, headers=headers, params=params or None, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in read_events(response):
            got.append(event)
            if until(event):
                break
    return got

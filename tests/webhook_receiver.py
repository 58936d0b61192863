"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that verifies Standard Webhooks
signatures with the ``standardwebhooks`` package and answers as told."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    payload: Optional[dict]
    at: float = field(default_factory=time.monotonic)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class Receiver:
    """``answers``: per path, a list of what to answer in turn (an int status, ``("hang", s)``,
    or ``(status, {headers})``); after the list runs out the last item repeats; default 200."""

    def __init__(self, secret: Optional[str] = None):
        self.secret = secret
        self.answers: dict[str, list] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.release = threading.Event()  # set to let hanging requests go
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified, payload = receiver._verify(body, headers)
                with receiver.lock:
                    receiver.received.append(Received(self.path, headers, body, verified, payload))
                    plan = receiver.answers.get(self.path, [200])
                    count = sum(1 for r in receiver.received if r.path == self.path)
                    answer = plan[min(count, len(plan)) - 1]
                    receiver.changed.notify_all()
                extra: dict = {}
                if isinstance(answer, tuple) and answer[0] == "hang":
                    receiver.release.wait(answer[1])
                    answer = 200
                elif isinstance(answer, tuple):
                    answer, extra = answer
                try:
                    self.send_response(answer)
                    for key, value in extra.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up on us (timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _verify(self, body: bytes, headers: dict) -> tuple[bool, Optional[dict]]:
        if self.secret is None:
            return False, None
        try:
            return True, Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            try:
                return False, json.loads(body)
            except ValueError:
                return False, None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: condition not met in {timeout}s; got {len(self.received)}")
                self.changed.wait(left)
            return list(self.received)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

"""What runs inside Ray Serve's HTTP proxy, in front of every application: a request body is read whole,
within a deadline and a size cap, before any replica holds the request; clients cannot switch the
proxy's timeout or disconnect handling off.

Ray Serve 2.60's proxy reads two client headers before any application code runs
(``ray/serve/_private/proxy.py``, ``HTTPProxy.send_request_to_replica``): ``x-request-timeout-seconds``
(a value ≤ 0 turns the request timeout off) and ``x-request-disconnect-disabled: ?1`` (the request
keeps running after the client hangs up). They are meant for a trusted front proxy, not for clients.
The proxy applies the Starlette middlewares returned by the function named in
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` (``ray/serve/_private/http_util.py``,
``configure_http_middlewares``), outside its own request handling, so the ones here see every
request first. Uvicorn, which serves the proxy, trusts ``X-Forwarded-For`` from the addresses in
``FORWARDED_ALLOW_IPS`` only (by default loopback): :func:`configure_environment` sets that from
``TRUSTED_PROXIES`` (none by default). Both are read when the proxy starts, so they are set in the
environment of the process that starts Ray (``python -m serving`` does; on KubeRay, the containers'
``env``; see docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import MutableMapping

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from i18n import messages

CALLBACK_PATH = "serving.proxy:proxy_middlewares"
# Headers through which a client could change how the proxy treats its request.
CLIENT_CONTROL_HEADERS = (b"x-request-timeout-seconds", b"x-request-disconnect-disabled")
DEFAULT_BODY_TIMEOUT_S = 120.0
DEFAULT_MAX_BODY_MB = 64
BODY_METHODS = ("POST", "PUT", "PATCH")


def configure_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Before Ray starts: install the middlewares below in the proxy and trust only ``TRUSTED_PROXIES``."""
    environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", CALLBACK_PATH)
    # Empty: X-Forwarded-For is believed from no one, so a client cannot pick its own address.
    environ.setdefault("FORWARDED_ALLOW_IPS", environ.get("TRUSTED_PROXIES", "").replace(" ", ""))


def proxy_middlewares() -> list[Middleware]:
    """The proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    return [
        Middleware(
            GuardedRequests,
            body_timeout_s=float(os.environ.get("REQUEST_BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT_S)),
            max_body_bytes=int(float(os.environ.get("PROXY_MAX_BODY_MB", DEFAULT_MAX_BODY_MB)) * 2**20),
        )
    ]


class GuardedRequests:
    """Strips the client-control headers; reads a body whole (≤ ``max_body_bytes``, within ``body_timeout_s``).

    A body that has not arrived in time is answered 408 here, too large 413, so a slow or stalled
    client holds a connection of the proxy, never a slot of the ingress deployment.
    """

    def __init__(
        self,
        app: ASGIApp,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_MB * 2**20,
    ):
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["headers"] = [(k, v) for k, v in scope.get("headers") or [] if k.lower() not in CLIENT_CONTROL_HEADERS]
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        language = messages.language(headers.get(b"accept-language", b"").decode("latin-1"))
        too_large = messages.BODY_OVER_PROXY_CAP(mb=self.max_body_bytes // 2**20).render(language)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _respond(send, 413, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                await _respond(send, 408, messages.BODY_TIMED_OUT.render(language))
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _respond(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        delivered = False

        async def replay() -> Message:
            nonlocal delivered, body
            if not delivered:
                delivered = True
                message, body = {"type": "http.request", "body": body, "more_body": False}, b""
                return message
            return await receive()  # afterwards: the client's disconnect, when it comes

        await self.app(scope, replay, send)


async def _respond(send: Send, status_code: int, detail: str) -> None:
    body = json.dumps({"detail": detail}, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

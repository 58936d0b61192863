"""ASGI middleware: upload size limits counted while the body streams in, and security headers."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from i18n import messages
from serving.errors import error_body, is_openai_path
from serving.uploads import BodyTooLarge

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]


class BodyLimitMiddleware:
    """Refuses a request body over ``limit_for(path)`` bytes with 413, without buffering it.

    Content-Length is checked first, but never trusted alone: the bytes are counted as they arrive.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if is_openai_path(scope["path"], scope.get("root_path", "")):
                await _send_json(send, 413, messages.render(BodyTooLarge(limit).detail, "en"), openai=True)
                return
            language = messages.language(headers.get(b"accept-language", b"").decode("latin-1"))
            await _send_json(send, 413, messages.render(BodyTooLarge(limit).detail, language))
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for key, value in SECURITY_HEADERS:
                    # A route that set its own (the web page, the docs pages: serving.docs) keeps it.
                    if key not in present:
                        headers.append((key, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_json(send: Send, status_code: int, detail: str, openai: bool = False) -> None:
    """The error as ``{"detail"}``, or in OpenAI's body (with ``x-should-retry: false``) under /v1."""
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    if openai:
        content = error_body(status_code, detail)
        headers.append((b"x-should-retry", b"false"))
    else:
        content = {"detail": detail}
    body = json.dumps(content, ensure_ascii=False).encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})

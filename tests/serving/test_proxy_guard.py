"""The middleware Serve's proxy runs in front of every application (serving/proxy.py), driven as ASGI.

The stalled client is a ``receive`` that never returns: the one fake here, to make the stall happen.
"""

from __future__ import annotations

import asyncio
import json

from serving.proxy import CALLBACK_PATH, GuardedRequests, configure_environment, proxy_middlewares


class Recorder:
    """The application behind the middleware: records what reached it."""

    def __init__(self):
        self.calls = []

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append((dict(scope["headers"]), body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _run(app, scope, messages, hang_after=False):
    sent = []
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if hang_after:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def _scope(method="POST", headers=()):
    return {"type": "http", "method": method, "path": "/x", "headers": list(headers)}


def test_client_control_headers_never_reach_serves_proxy():
    inner = Recorder()
    headers = [(b"x-request-timeout-seconds", b"0"), (b"x-request-disconnect-disabled", b"?1"), (b"accept", b"*/*")]
    _run(GuardedRequests(inner), _scope("GET", headers), [{"type": "http.request", "body": b""}])
    seen, _ = inner.calls[0]
    assert seen == {b"accept": b"*/*"}


def test_a_body_is_handed_on_whole_only_once_it_has_all_arrived():
    inner = Recorder()
    parts = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"cd"}]
    sent = _run(GuardedRequests(inner), _scope(), parts)
    assert inner.calls[0][1] == b"abcd" and sent[0]["status"] == 200


def test_a_body_that_stalls_is_answered_408_and_never_reaches_the_application():
    inner = Recorder()
    sent = _run(
        GuardedRequests(inner, body_timeout_s=0.2),
        _scope(),
        [{"type": "http.request", "body": b"{", "more_body": True}],
        hang_after=True,
    )
    assert sent[0]["status"] == 408 and inner.calls == []


def test_a_body_over_the_cap_is_413_whether_declared_or_streamed():
    inner = Recorder()
    declared = _run(GuardedRequests(inner, max_body_bytes=10), _scope(headers=[(b"content-length", b"11")]), [])
    streamed = _run(
        GuardedRequests(inner, max_body_bytes=10),
        _scope(),
        [{"type": "http.request", "body": b"x" * 6, "more_body": True}, {"type": "http.request", "body": b"x" * 6}],
    )
    assert declared[0]["status"] == streamed[0]["status"] == 413 and inner.calls == []
    assert json.loads(declared[1]["body"]) == {"detail": "请求体过大：最大 0 MB"}


def test_the_proxys_answers_are_in_the_language_asked_for():
    inner = Recorder()
    english = [(b"accept-language", b"en-GB,en;q=0.9")]
    large = _run(
        GuardedRequests(inner, max_body_bytes=2 * 2**20),
        _scope(headers=[*english, (b"content-length", b"9999999")]),
        [],
    )
    assert json.loads(large[1]["body"]) == {"detail": "The request body is too large: at most 2 MB"}
    stalled = _run(
        GuardedRequests(inner, body_timeout_s=0.2),
        _scope(headers=english),
        [{"type": "http.request", "body": b"{", "more_body": True}],
        hang_after=True,
    )
    assert json.loads(stalled[1]["body"]) == {"detail": "The request body did not arrive in time"}


def test_environment_installs_the_callback_and_trusts_only_configured_proxies():
    env = {"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1"}
    configure_environment(env)
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == CALLBACK_PATH
    assert env["FORWARDED_ALLOW_IPS"] == "10.0.0.0/8,192.0.2.1"
    bare = {}
    configure_environment(bare)
    assert bare["FORWARDED_ALLOW_IPS"] == ""  # loopback is not trusted by default either
    assert [m.cls for m in proxy_middlewares()] == [GuardedRequests]

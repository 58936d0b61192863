"""Which token the auth dependency checks: bearer first, then the browser session cookie, and the
CSRF header that cookie-authenticated changes need (no Ray, no HTTP: a bare ASGI request)."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import Request

from auth.deps import session_token

pytestmark = pytest.mark.unit


def request(method: str = "GET", headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": method, "path": "/tasks/x", "headers": raw, "query_string": b""})


def bearer(token: str) -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)


def test_bearer_wins_over_the_cookie():
    assert session_token(request("POST"), bearer("from-header"), "from-cookie") == "from-header"


def test_bearer_needs_no_csrf_header_even_with_a_cookie_present():
    assert session_token(request("DELETE"), bearer("t"), "c") == "t"


def test_cookie_is_used_without_a_bearer():
    assert session_token(request("GET"), None, "from-cookie") == "from-cookie"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_cookie_changes_need_the_csrf_header(method):
    with pytest.raises(HTTPException) as caught:
        session_token(request(method), None, "c")
    assert caught.value.status_code == 403 and "X-Requested-With" in caught.value.detail
    with pytest.raises(HTTPException):
        session_token(request(method, {"X-Requested-With": "XMLHttpRequest"}), None, "c")
    assert session_token(request(method, {"X-Requested-With": "qwen-image"}), None, "c") == "c"


def test_no_credentials_gives_none():
    assert session_token(request("POST"), None, None) is None
    assert session_token(request("GET"), None, "") is None

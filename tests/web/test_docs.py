"""The API docs in a real browser with no network: ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc)
render from the files installed with the service, every request to another host refused.

The app is the service's own (``serving.api.create_app``) served by uvicorn on 127.0.0.1; the docs
and the OpenAPI schema need no database or Ray. Chromium is Debian's, driven as in test_page.py.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from serving.api import create_app
from tests.web.test_page import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def docs_url() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), "install Debian's chromium (see .ci/run)"
    with sync_playwright() as playwright:
        yield playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


class Offline:
    """A page on which every request to a host other than 127.0.0.1 is aborted (and recorded),
    with its console errors (a Content-Security-Policy refusal is one) recorded too."""

    def __init__(self, browser: Browser):
        self.context = browser.new_context()
        self.page: Page = self.context.new_page()
        self.refused: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort("internetdisconnected")


def test_swagger_ui_renders_the_operations_without_the_network(browser, docs_url):
    offline = Offline(browser)
    page = offline.page
    page.goto(docs_url + "/docs")
    operation = page.locator(".opblock-post .opblock-summary-path", has_text="/text-to-image").first
    expect(operation).to_be_visible(timeout=20_000)
    expect(page.locator(".opblock-get .opblock-summary-path", has_text="/tasks/{task_id}").first).to_be_visible()
    assert offline.refused == [] and offline.errors == [], (offline.refused, offline.errors)
    offline.context.close()


def test_redoc_renders_the_operations_without_the_network(browser, docs_url):
    offline = Offline(browser)
    page = offline.page
    page.goto(docs_url + "/redoc")
    expect(page.locator("h2", has_text="Text To Image").first).to_be_visible(timeout=20_000)
    expect(page.get_by_text("/text-to-image").first).to_be_attached()
    # ReDoc's sidebar shows Redocly's logo from their CDN: the page's CSP refuses it (it never leaves).
    errors = [error for error in offline.errors if "cdn.redoc.ly" not in error or "img-src" not in error]
    assert offline.refused == [] and errors == [], (offline.refused, offline.errors)
    offline.context.close()


def test_the_docs_pages_allow_no_other_host(docs_url):
    import httpx

    for path in ("/docs", "/redoc"):
        answer = httpx.get(docs_url + path)
        csp = answer.headers["content-security-policy"]
        assert answer.status_code == 200 and "cdn" not in answer.text.lower(), path
        assert "default-src 'none'" in csp and "https:" not in csp and "*" not in csp, csp
    assert httpx.get(docs_url + "/docs/static/swagger-ui-bundle.js").status_code == 200
    assert httpx.get(docs_url + "/docs/static/redoc.standalone.js").status_code == 200

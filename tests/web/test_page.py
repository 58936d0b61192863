"""The web page in a real browser (Debian's headless Chromium driven by Playwright) against the
real service on the tiny profile: the session's Serve instance at ``/``.

Screenshots of the main screens are written to ``$QWEN_SCREENSHOT_DIR`` when it is set (the
README's come from ``QWEN_SCREENSHOT_DIR=docs/screenshots``), else to a temporary folder.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.api.helpers import image_bytes

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TASK_TIMEOUT_MS = 120_000
# What a page shows after a request to the shared service: CI's machines answer slower than 5 s
# (Playwright's default) while the rest of the suite's apps run beside it. Slowness that is the
# page's own fault (a request per row, say) is asserted on directly, not through this wait.
expect.set_options(timeout=15_000)
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Browser]:
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), "install Debian's chromium (see .ci/run)"
    with sync_playwright() as playwright:
        # An empty user-data dir per run: a persistent context owns it.
        yield playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("QWEN_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watched:
    """A page whose console errors, uncaught exceptions and dialogs (alert(1)!) are recorded."""

    def __init__(self, page: Page):
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def open_page(browser: Browser, base_url: str, locale: str = "en-US", width: int = 1280, height: int = 900) -> Watched:
    context = browser.new_context(locale=locale, viewport={"width": width, "height": height}, accept_downloads=True)
    watched = Watched(context.new_page())
    watched.page.goto(base_url + "/")
    expect(watched.page.locator("body[data-ready=true]")).to_have_count(1)
    return watched


def submit_t2i(page: Page, prompt: str, steps: int = 20, ratio: str = "1:1") -> None:
    page.get_by_role("tab", name=re.compile("Text to image|文生图")).click()
    page.locator("#prompt").fill(prompt)
    page.locator(f"label[for=ratio-{ratio.replace(':', '-')}]").click()
    page.locator("#steps").fill(str(steps))
    page.locator("#submit").click()


def loaded_size(img) -> list[int]:
    """A shown image's natural size once it has loaded (a thumbnail loads after its card)."""
    img.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle(), timeout=30_000)
    return img.evaluate("img => [img.naturalWidth, img.naturalHeight]")


def task_item(page: Page, text: str):
    return page.locator("#tasks .task").filter(has=page.locator(".task-prompt", has_text=text)).first


def test_page_is_served_with_a_strict_csp_and_docs_still_work(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "style-src 'self'" in csp
    assert 'href="docs"' in page.text  # the page links to the API docs, which work offline (test_docs.py)
    assert (
        client.get("/static/app.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))
    )
    assert client.get("/static/missing.js").status_code == 404
    assert client.get("/docs").status_code == 200
    assert "default-src 'none'" in client.get("/docs").headers["content-security-policy"]  # its own: serving.docs
    assert client.get("/health").headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


LIGHTHOUSE = "a lighthouse on a cliff at dusk, oil painting"
RAMEN = "a bowl of ramen on a wooden table, studio photo"
DOLOMITES = "a panorama of the Dolomites at sunrise, wide angle"
NIGHT = "make it night, with lit windows"


def register(page: Page, username: str, password: str) -> None:
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.locator("#register").click()
    expect(page.locator("#whoami")).to_have_text(username)


def wait_running(page: Page, prompt: str, below: int = 60) -> None:
    """Until the task of ``prompt`` runs with its bar past 0 and below ``below`` %."""
    page.wait_for_function(
        """([prompt, below]) => { const t = [...document.querySelectorAll('#tasks .task')]
        .find(li => li.querySelector('.task-prompt').textContent === prompt);
        if (!t) return false;
        const v = Number(t.querySelector('.bar').getAttribute('aria-valuenow'));
        return t.dataset.status === 'running' && v > 0 && v < below; }""",
        arg=[prompt, below],
        timeout=TASK_TIMEOUT_MS,
        polling=100,
    )


def test_a_newcomer_makes_an_image_reloads_and_still_has_it(browser, base_url, shots, tmp_path):
    """Register, generate (Ctrl+Enter), see the image in its task card, group a task's images in one
    gallery card, reload (finished tasks come back, a running one is followed again), cancel it,
    then the viewer, *Use as edit input*, *Same settings again* (also after a reload, the edit's
    input read back) and the history's thumbnails."""
    w = open_page(browser, base_url)
    page = w.page
    expect(page.locator("#view-login")).to_be_visible()
    page.screenshot(path=str(shots / "login.png"))

    # A wrong password: the API's own detail, in the browser's language.
    page.locator("input[name=username]").fill("nobody_" + uuid.uuid4().hex[:6])
    page.locator("input[name=password]").fill("wrong-password")
    page.locator("#login-submit").click()
    expect(page.locator("#alert-text")).to_have_text("Incorrect username or password")
    assert all("401" in e for e in w.errors), w.errors  # the browser logs the refused request itself
    w.errors.clear()

    register(page, "maria", "maria-paints-2026")
    expect(page.locator("#view-create")).to_be_visible()
    assert page.context.cookies()[0]["httpOnly"] is True
    assert page.evaluate("document.cookie") == ""  # the token is out of reach of scripts
    expect(page.locator("a.docs-link")).to_have_attribute("href", "docs")

    # Ctrl+Enter generates; the bar goes to 100 % and the image appears in the task's own card.
    page.evaluate("""() => { window.__seen = [];
        new MutationObserver((records) => { for (const r of records) if (r.attributeName === 'aria-valuenow')
          window.__seen.push(Number(r.target.getAttribute('aria-valuenow'))); })
        .observe(document.querySelector('#tasks'), {attributes: true, subtree: true}); }""")
    page.locator("#prompt").fill(LIGHTHOUSE)
    page.locator("#steps").fill("30")
    page.locator("#prompt").press("Control+Enter")
    lighthouse = task_item(page, LIGHTHOUSE)
    expect(lighthouse).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)
    expect(lighthouse.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    seen = page.evaluate("window.__seen")
    assert seen and seen[-1] == 100 and seen == sorted(seen), seen
    card_image = lighthouse.locator(".task-images img")
    expect(card_image).to_have_count(1)
    assert re.search(r"tasks/[0-9a-f-]+/images/0\?size=\d+$", card_image.get_attribute("src") or "")
    page.wait_for_function("() => document.querySelector('#tasks .task-images img').naturalWidth > 0")
    expect(lighthouse.locator(".task-meta")).to_contain_text("seed")

    # Two images of one task: one gallery card holding both, with one download for the ZIP.
    page.locator("#prompt").fill(RAMEN)
    page.locator("#count").select_option("2")
    page.locator("#steps").fill("20")
    page.locator("#submit").click()
    ramen = task_item(page, RAMEN)
    expect(ramen).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)
    expect(ramen.locator(".task-images img")).to_have_count(2)
    ramen_card = page.locator("#gallery .shot").filter(has_text=RAMEN)
    expect(ramen_card).to_have_count(1)
    expect(ramen_card.locator(".shot-images img")).to_have_count(2)
    expect(ramen_card.locator("a.dl")).to_have_text("ZIP (2 images)")
    expect(ramen_card.locator("button")).to_have_count(3)  # two images and "Same settings again"

    # A long task (two images of 100 steps), running when the page reloads: it comes back and is
    # followed again.
    submit_t2i(page, DOLOMITES, steps=100, ratio="16:9")
    page.locator("#count").select_option("1")
    wait_running(page, DOLOMITES, below=30)
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    expect(page.locator("#whoami")).to_have_text("maria")
    # Everything finished is still there: the cards with their images, the gallery.
    expect(task_item(page, LIGHTHOUSE)).to_have_attribute("data-status", "completed")
    expect(task_item(page, LIGHTHOUSE).locator(".task-images img")).to_have_count(1)
    expect(page.locator("#gallery .shot")).to_have_count(2)
    expect(page.locator("#gallery .shot").first.locator(".shot-prompt")).to_have_text(RAMEN)  # newest first
    slow = task_item(page, DOLOMITES)
    before = int(slow.locator(".bar").get_attribute("aria-valuenow") or 0)
    page.wait_for_function(
        """([prompt, before]) => { const t = [...document.querySelectorAll('#tasks .task')]
        .find(li => li.querySelector('.task-prompt').textContent === prompt);
        return t && Number(t.querySelector('.bar').getAttribute('aria-valuenow')) > before; }""",
        arg=[DOLOMITES, before],
        timeout=TASK_TIMEOUT_MS,
    )
    expect(slow.locator(".preview")).to_be_visible(timeout=TASK_TIMEOUT_MS)  # a live preview, again
    page.screenshot(path=str(shots / "create.png"), full_page=True)
    slow.locator(".task-cancel").click()
    expect(slow).to_have_attribute("data-status", "cancelled", timeout=TASK_TIMEOUT_MS)
    expect(slow.locator(".preview")).to_be_hidden()  # a cancelled card drops its last preview
    assert slow.locator(".preview").get_attribute("src") is None
    expect(slow.locator(".task-cancel")).to_be_hidden()

    # The viewer: full size, settings and seed beside it, arrows between the images.
    page.get_by_role("link", name="Gallery").click()
    page.screenshot(path=str(shots / "gallery.png"), full_page=True)
    page.locator("#gallery .shot").filter(has_text=LIGHTHOUSE).locator("button.thumb").click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(page.locator("#viewer-prompt")).to_have_text(LIGHTHOUSE)
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth === 1024")
    expect(page.locator("#viewer-settings")).to_contain_text("Seed")
    expect(page.locator("#viewer-settings")).to_contain_text("30")  # its steps
    expect(page.locator("#viewer-position")).to_have_text("3 / 3")
    assert (page.locator("#viewer-download").get_attribute("href") or "").endswith("/images/0")
    page.screenshot(path=str(shots / "viewer.png"))
    page.keyboard.press("ArrowRight")  # round to the first: the newest task's first image
    expect(page.locator("#viewer-prompt")).to_have_text(RAMEN)
    expect(page.locator("#viewer-position")).to_have_text("1 / 3 · image 1 of 2")
    page.locator("#viewer-next").click()
    expect(page.locator("#viewer-position")).to_have_text("2 / 3 · image 2 of 2")
    with page.expect_download() as download:
        page.locator("#viewer-download").click()
    saved = tmp_path / "ramen.png"
    download.value.save_as(saved)
    assert Image.open(saved).size == (1024, 1024)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#viewer-prompt")).to_have_text(LIGHTHOUSE)

    # Use as edit input: the Edit tab, the image as its input, the text-to-image prompt cleared.
    page.locator("#viewer-edit").click()
    expect(viewer).to_be_hidden()
    expect(page.locator("#view-create")).to_be_visible()
    expect(page.get_by_role("tab", name="Edit", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#thumbs img")).to_have_count(1)
    expect(page.locator("#prompt")).to_have_value("")
    expect(page.locator("#prompt")).to_have_attribute("placeholder", re.compile("Describe the change"))
    # A second image from the file picker: its thumbnail, and no "No file chosen" beside it.
    upload = tmp_path / "window.png"
    upload.write_bytes(image_bytes(size=(256, 192)))
    page.locator("#files").set_input_files(str(upload))
    expect(page.locator("#thumbs img")).to_have_count(2)
    assert page.locator("#files").evaluate("input => getComputedStyle(input).opacity") == "0"
    page.locator("#thumbs button").nth(1).click()
    expect(page.locator("#thumbs img")).to_have_count(1)
    # A dropped image goes in beside it, and can be removed again.
    page.evaluate(
        """(b64) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer(); dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        document.querySelector('#drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true,
          cancelable: true})); }""",
        base64.b64encode(image_bytes(size=(96, 96))).decode(),
    )
    expect(page.locator("#thumbs img").nth(1)).to_have_attribute("alt", "dropped.png")
    page.locator("#thumbs button").nth(1).click()
    expect(page.locator("#thumbs img")).to_have_count(1)
    page.locator("#prompt").fill(NIGHT)
    page.locator("#steps").fill("20")
    page.locator("#submit").click()
    expect(task_item(page, NIGHT)).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)

    # "Same settings again" brings back the prompt, mode, steps and the input image.
    page.get_by_role("link", name="Gallery").click()
    page.locator("#gallery .shot").filter(has_text=NIGHT).locator(".again").click()
    expect(page.locator("#prompt")).to_have_value(NIGHT)
    expect(page.locator("#steps")).to_have_value("20")
    expect(page.locator("#thumbs img")).to_have_count(1)
    # After a reload the edit is rebuilt from its record: its input image is read back from the service.
    page.reload()
    page.get_by_role("link", name="Gallery").click()
    page.locator("#gallery .shot").filter(has_text=NIGHT).locator(".again").click()
    expect(page.locator("#prompt")).to_have_value(NIGHT)
    expect(page.get_by_role("tab", name="Edit", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#thumbs img")).to_have_count(1)
    page.wait_for_function("() => document.querySelector('#thumbs img').naturalWidth > 0")

    # History: thumbnails in the rows, each opening the viewer; statistics; filters.
    page.get_by_role("link", name="History").click()
    rows = page.locator("#history-table tbody tr")
    expect(rows).to_have_count(4)
    expect(page.locator("#history-table button.thumb img")).to_have_count(4)  # 1 + 2 + 0 (cancelled) + 1
    expect(page.locator("#stats .stat").first).to_contain_text("4")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#history-table button.thumb img')]"
        ".every(i => i.complete && i.naturalWidth)"
    )
    page.screenshot(path=str(shots / "history.png"), full_page=True)
    rows.filter(has_text=LIGHTHOUSE).locator("button.thumb").click()
    expect(page.locator("#viewer-prompt")).to_have_text(LIGHTHOUSE)
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    page.locator("#history-form select[name=status]").select_option("cancelled")
    page.locator("#history-form button[type=submit]").click()
    expect(rows).to_have_count(1)
    expect(page.locator("#page-info")).to_contain_text("1 tasks")

    # Switch to Chinese: texts change, and the API answers in Chinese as well.
    page.locator("#lang").select_option("zh")
    expect(page.get_by_role("link", name="历史")).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "zh-CN"

    assert not w.errors, w.errors
    assert not w.dialogs


def test_a_prompt_that_looks_like_html_is_text_everywhere(browser, base_url, make_user):
    someone = make_user("html")
    w = open_page(browser, base_url)
    page = w.page
    page.locator("input[name=username]").fill(someone.username)
    page.locator("input[name=password]").fill(someone.password)
    page.locator("#login-submit").click()
    expect(page.locator("#whoami")).to_have_text(someone.username)
    submit_t2i(page, XSS, steps=20)
    xss = task_item(page, XSS)
    expect(xss).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)
    expect(xss.locator(".task-prompt")).to_have_text(XSS)
    page.get_by_role("link", name="Gallery").click()
    expect(page.locator("#gallery .shot-prompt").first).to_have_text(XSS)
    page.locator("#gallery button.thumb").first.click()
    expect(page.locator("#viewer-prompt")).to_have_text(XSS)
    page.keyboard.press("Escape")
    page.get_by_role("link", name="History").click()
    expect(page.locator("#history-table .prompt-cell", has_text=XSS)).to_have_count(1)
    assert page.locator("img[src=x]").count() == 0 and not w.dialogs
    # Logging out takes the tasks off the screen: the next person at this browser sees none of them.
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#view-login")).to_be_visible()
    assert page.locator("#tasks .task, #gallery .shot").count() == 0
    assert not w.errors, w.errors


def test_admin_pages_and_phone_width(browser, base_url, shots, make_user, client, admin_headers):
    target = make_user("pageadm")
    assert (
        client.put(f"/auth/users/{target.id}/quota", headers=admin_headers, json={"daily_limit": 5}).status_code == 200
    )
    # More users than one page of the list holds (50), however many earlier tests registered.
    total = int(client.get("/auth/users", headers=admin_headers, params={"limit": 1}).headers["x-total-count"])
    for _ in range(51 - total):
        make_user("filler")
    total = max(total, 51)
    pages = -(-total // 50)
    w = open_page(browser, base_url, locale="zh-CN", width=390, height=844)
    page = w.page
    expect(page.locator("#login-submit")).to_have_text("登录")
    # By keyboard alone.
    page.locator("input[name=username]").focus()
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    page.keyboard.type("admin123")
    page.keyboard.press("Enter")
    expect(page.locator("#nav-admin")).to_be_visible()
    # Ctrl+Enter with nothing written: the page asks for a prompt, nothing is sent.
    page.locator("#prompt").press("Control+Enter")
    expect(page.locator("#alert-text")).to_have_text("请先填写提示词。")
    page.locator("#alert-close").click()
    page.screenshot(path=str(shots / "phone.png"), full_page=True)
    # Everything fits the phone's width: no sideways scrolling of the page itself.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    page.set_viewport_size({"width": 1280, "height": 900})
    per_user = []
    page.on("request", lambda r: per_user.append(r.url) if "/auth/users/" in r.url else None)
    page.locator("#nav-admin").click()
    # A page of 50 users at a time, with their number and the pages they fill.
    expect(page.locator("#users-info")).to_have_text(f"第 1 / {pages} 页 · 共 {total} 个用户")
    expect(page.locator("#users-table tbody tr")).to_have_count(50)
    expect(page.locator("#users-prev")).to_be_disabled()
    page.locator("#users-next").click()
    expect(page.locator("#users-info")).to_have_text(f"第 2 / {pages} 页 · 共 {total} 个用户")
    expect(page.locator("#users-prev")).to_be_enabled()
    # Paging keeps the search last submitted, not what is typed and not yet sent.
    search = page.locator("#users-form input[name=q]")
    search.fill("nobody-has-this-name")
    page.locator("#users-prev").click()
    expect(page.locator("#users-info")).to_have_text(f"第 1 / {pages} 页 · 共 {total} 个用户")
    search.press("Enter")
    expect(page.locator("#users-table tbody")).to_have_text("没有符合条件的用户。")
    expect(page.locator("#users-info")).to_have_text("第 1 / 1 页 · 共 0 个用户")
    # Found by part of the name, in another case.
    search.fill(target.username.upper()[:-2])
    search.press("Enter")
    row = page.locator("#users-table tbody tr").filter(has_text=target.username)
    expect(row).to_have_count(1)
    expect(page.locator("#users-table tbody tr")).to_have_count(1)
    expect(page.locator("#users-info")).to_have_text("第 1 / 1 页 · 共 1 个用户")
    # One read per page of the list, each user's own limits in it: never one per user.
    page.wait_for_load_state("networkidle")
    assert per_user == []
    expect(row.get_by_label(f"{target.username} daily")).to_have_value("5")
    monthly = row.get_by_label(f"{target.username} monthly")
    expect(monthly).to_have_value("")  # empty: the service default, which it names
    expect(monthly).to_have_attribute("placeholder", "默认 3000")
    monthly.fill("900")
    row.get_by_role("button", name="保存配额").click()
    expect(page.locator("#alert-text")).to_have_text("配额已保存。")
    page.locator("#alert-close").click()
    expect(page.locator("#global-stats .stat").first).to_be_visible()
    # The administrator still logs in with admin123 here: the admin page says so.
    expect(page.locator("#admin-warning")).to_be_visible()
    expect(page.locator("#admin-warning")).to_contain_text("默认密码")
    row.get_by_role("button", name="禁用").click()
    expect(row.get_by_role("button", name="启用")).to_be_visible()
    # The row rebuilt after the toggle keeps both limits, the one saved on the page too.
    expect(row.get_by_label(f"{target.username} daily")).to_have_value("5")
    expect(row.get_by_label(f"{target.username} monthly")).to_have_value("900")
    page.screenshot(path=str(shots / "admin.png"))
    page.locator("#cleanup-form button[type=submit]").click()
    expect(page.locator("#cleanup-out")).to_contain_text("已清理")
    # The clean-up reloads the user list and the statistics; a log-out in the middle would rightly
    # answer those reads 401, which the console reports.
    page.wait_for_load_state("networkidle")
    # Deleting the one user found: the list is read again, with its count.
    page.evaluate("window.confirm = () => true")  # "Delete user …?" answered yes (the page's dialogs are refused)
    row.get_by_role("button", name="删除").click()
    expect(page.locator("#users-table tbody")).to_have_text("没有符合条件的用户。")
    expect(page.locator("#users-info")).to_have_text("第 1 / 1 页 · 共 0 个用户")
    assert client.get(f"/auth/users/{target.id}/quota", headers=admin_headers).status_code == 404
    page.wait_for_load_state("networkidle")

    page.get_by_role("button", name="退出登录").click()
    expect(page.locator("#view-login")).to_be_visible()
    assert not w.errors, w.errors


def multipart_fields(request) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` request the page sent, by field name."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=default_policy).parsebytes(head + request.post_data_buffer)
    return {
        str(part.get_param("name", header="content-disposition")): part.get_content() for part in message.iter_parts()
    }


def submitted(page: Page, path: str) -> dict[str, bytes]:
    """Presses *Generate* and returns the fields of the POST the page sends to ``path``. Through
    ``page.route``: Chromium gives the body of a form holding blobs only to an intercepted request
    (playwright#24077), not to ``expect_request``. The request then goes on to the service."""
    seen = []

    def capture(route) -> None:
        seen.append(route.request)
        route.continue_()

    page.route(f"**/{path}", capture)
    try:
        page.locator("#submit").click()
        for _ in range(80):  # the handler runs while the page waits (sync API: events come in then)
            if seen:
                break
            page.wait_for_timeout(250)
        assert seen, f"no POST to /{path}"
    finally:
        page.unroute(f"**/{path}", capture)
    assert seen[0].method == "POST"
    return multipart_fields(seen[0])


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def paint(page: Page, stroke: list[tuple[float, float]]) -> None:
    """Drags the mouse over the mask canvas through points given as fractions of its size."""
    box = page.locator("#mask-canvas").bounding_box()
    assert box is not None
    points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=8)
    page.mouse.up()


def test_inpainting_sends_the_painted_mask_and_outpainting_the_chosen_edges(browser, base_url, shots, user, tmp_path):
    w = open_page(browser, base_url)
    page = w.page
    page.locator("input[name=username]").fill(user.username)
    page.locator("input[name=password]").fill(user.password)
    page.locator("#login-submit").click()
    expect(page.locator("#whoami")).to_have_text(user.username)

    page.get_by_role("tab", name="Image to image").click()
    upload = tmp_path / "street.png"
    upload.write_bytes(image_bytes(size=(1024, 768), color=(40, 90, 160)))
    page.locator("#files").set_input_files(str(upload))
    canvas = page.locator("#mask-canvas")
    page.wait_for_function("document.querySelector('#mask-canvas').width === 1024")
    assert canvas.evaluate("c => c.height") == 768
    shown_box = canvas.bounding_box()
    assert shown_box and shown_box["width"] < 1024  # shown scaled down: the mask still has natural pixels
    expect(page.locator("#strength")).to_have_value("0.6")  # a plain redraw's default

    # A horizontal stroke across the middle, a bit erased at its right end.
    page.locator("#mask-size").fill("40")
    paint(page, [(0.2, 0.5), (0.5, 0.5), (0.8, 0.5)])
    page.locator("#mask-eraser").click()
    paint(page, [(0.78, 0.4), (0.78, 0.6)])
    page.locator("#mask-brush").click()
    expect(page.locator("#strength")).to_have_value("1")  # inpainting repaints fully unless told otherwise
    page.screenshot(path=str(shots / "inpaint.png"), full_page=True)

    page.locator("#prompt").fill("a red door")
    page.locator("#steps").fill("20")
    fields = submitted(page, "image-to-image")
    assert set(fields) == {
        "negative_prompt", "num_inference_steps", "true_cfg_scale", "seed", "prompt", "num_images", "strength",
        "image", "mask",
    }  # fmt: skip
    assert text(fields["strength"]) == "1" and text(fields["prompt"]) == "a red door"
    mask = Image.open(io.BytesIO(fields["mask"]))
    assert mask.format == "PNG" and mask.size == (1024, 768)
    grey = mask.convert("L")
    assert set(grey.getdata()) == {0, 255}  # opaque black and white, nothing in between
    assert grey.getpixel((512, 384)) == 255 and grey.getpixel((260, 384)) == 255  # painted
    assert grey.getpixel((800, 384)) == 0  # erased again
    assert grey.getpixel((512, 100)) == 0 and grey.getpixel((10, 10)) == 0  # never painted
    door = task_item(page, "a red door")
    expect(door).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)

    # Outpainting: a mask is cleared first; a ratio resets the sides and a side resets the ratio.
    page.locator("#mask-clear").click()
    page.locator("#extend-left").fill("128")
    page.locator("#extend-to").select_option("16:9")
    expect(page.locator("#extend-left")).to_have_value("0")
    page.locator("#extend-right").fill("256")
    page.locator("#extend-top").fill("64")
    expect(page.locator("#extend-to")).to_have_value("")
    page.locator("#prompt").fill("more street")
    fields = submitted(page, "image-to-image")
    assert "mask" not in fields and "extend_to" not in fields and "extend_left" not in fields
    assert (text(fields["extend_right"]), text(fields["extend_top"]), text(fields["strength"])) == ("256", "64", "1")
    wider = task_item(page, "more street")
    expect(wider).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)
    size = loaded_size(wider.locator(".task-images img"))  # the card's (the gallery's are lazy, and it is hidden)
    assert size[0] / size[1] == pytest.approx((1024 + 256) / (768 + 64), rel=0.05)

    # Edit with one image: the same brush; the mask and its strength go to /image-edit.
    page.get_by_role("tab", name="Edit", exact=True).click()
    expect(page.locator("#mask-box")).to_be_visible()
    expect(page.locator("#strength-box")).to_be_hidden()  # nothing painted: an ordinary edit
    paint(page, [(0.1, 0.1), (0.3, 0.3)])
    expect(page.locator("#strength-box")).to_be_visible()
    page.locator("#prompt").fill("greener corner")
    fields = submitted(page, "image-edit")
    assert text(fields["strength"]) == "1" and Image.open(io.BytesIO(fields["mask"])).size == (1024, 768)
    expect(task_item(page, "greener corner")).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)
    assert not w.errors, w.errors

"""The page's generation options (LoRA picker, fast mode, custom size) and its account view (API
keys, the webhook secret, recent deliveries) in a real browser against the real service.

The options run on the session's main app (tiny pipelines, real LoRA files in the catalogue); the
account view on ``/acct``, a ``sleep``-profile app that lets webhooks reach a receiver on
127.0.0.1. Screenshots go to ``$QWEN_SCREENSHOT_DIR`` when it is set, as in test_page.py.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from standardwebhooks.webhooks import Webhook

from auth.security import API_KEY_DISPLAY_CHARS
from models.adapters import MAX_ADAPTERS_PER_REQUEST, MAX_SCALE, MIN_SCALE
from models.aspect import MAX_SIDE, MIN_SIDE, SIDE_MULTIPLE
from models.tiny_adapter import build_tiny_lora
from tests.api.helpers import image_bytes, wait_status
from tests.conftest import bearer, login, sleep_app_args
from tests.web import test_page
from tests.web.test_page import TASK_TIMEOUT_MS, loaded_size, open_page, submitted, task_item, text
from tests.webhook_receiver import Receiver

OPTIONS_JS = Path(__file__).resolve().parents[2] / "web" / "static" / "options.js"
PASSWORD = "lighthouse-42"

# test_page's fixtures, shared: one Chromium per module, screenshots where test_page writes them.
browser = test_page.browser
shots = test_page.shots


@pytest.mark.unit
def test_the_pages_limits_are_the_services():
    source = OPTIONS_JS.read_text()
    found = dict(re.findall(r"export const (\w+) = (-?\d+);", source))
    assert found == {
        "MIN_SIDE": str(MIN_SIDE),
        "MAX_SIDE": str(MAX_SIDE),
        "SIDE_MULTIPLE": str(SIDE_MULTIPLE),
        "MAX_LORAS": str(MAX_ADAPTERS_PER_REQUEST),
        "MIN_SCALE": str(int(MIN_SCALE)),
        "MAX_SCALE": str(int(MAX_SCALE)),
    }


def register(client: httpx.Client, username: str) -> str:
    """Registers ``username`` (or, if another test took it, a variant); returns the name used."""
    for name in (username, f"{username}_{uuid.uuid4().hex[:4]}"):
        response = client.post("/auth/register", json={"username": name, "password": PASSWORD})
        if response.status_code == 201:
            return name
    raise AssertionError(response.text)


def log_in(page: Page, username: str) -> None:
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("#login-submit").click()
    expect(page.locator("#whoami")).to_have_text(username)


@pytest.fixture(scope="module")
def styles(client, admin_headers, tmp_path_factory) -> None:
    """Four adapters in the main app's catalogue: three for text-to-image, one for editing."""
    folder = tmp_path_factory.mktemp("styles")
    files = {
        "text_to_image": build_tiny_lora("text_to_image", str(folder / "t2i"), seed=31, strength=2.0),
        "image_edit": build_tiny_lora("image_edit", str(folder / "edit"), seed=32, strength=2.0),
    }
    entries = [
        ("watercolor", "text_to_image", "0.8", "Soft watercolor washes", "watercolor"),
        ("film-grain", "text_to_image", "0.6", "35 mm film grain", ""),
        ("ink-sketch", "text_to_image", "1.0", "Pen and ink lines", "ink sketch"),
        ("studio-light", "image_edit", "1.0", "Product-photo lighting", ""),
    ]
    for name, model, scale, description, words in entries:
        with open(files[model], "rb") as file:
            response = client.post(
                "/admin/loras",
                headers=admin_headers,
                data={
                    "name": name,
                    "model": model,
                    "default_scale": scale,
                    "description": description,
                    "trigger_words": words,
                },
                files={"file": (f"{name}.safetensors", file, "application/octet-stream")},
            )
        assert response.status_code in (201, 409), response.text


def options_in(page: Page) -> list[str]:
    return page.locator("#lora-select option").evaluate_all("options => options.map(o => o.value).filter(Boolean)")


def newest_task(client: httpx.Client, headers: dict) -> dict:
    return client.get("/tasks/history/me", headers=headers, params={"page_size": 1}).json()["items"][0]


def test_lora_picker_fast_mode_and_custom_size_reach_the_api(browser, base_url, client, shots, styles, tmp_path):
    username = register(client, "maria_lopes")
    headers = bearer(login(client, username, PASSWORD))
    w = open_page(browser, base_url)
    page = w.page
    log_in(page, username)

    # Text to image: the catalogue's text-to-image adapters only, each at its default scale.
    expect(page.locator("#lora-select option[value=watercolor]")).to_have_count(1)
    assert {"watercolor", "film-grain", "ink-sketch"} <= set(options_in(page))
    assert "studio-light" not in options_in(page)
    for name in ("watercolor", "film-grain", "ink-sketch"):
        page.locator("#lora-select").select_option(name)
        page.locator("#lora-add").click()
    expect(page.locator("#lora-list .lora")).to_have_count(3)
    expect(page.locator("#lora-scale-watercolor")).to_have_value("0.8")
    expect(page.locator("#lora-select")).to_be_disabled()  # three is the most a request takes
    expect(page.locator("#lora-full")).to_be_visible()
    page.get_by_role("button", name="Remove ink-sketch").click()
    expect(page.locator("#lora-list .lora")).to_have_count(2)
    expect(page.locator("#lora-select")).to_be_enabled()
    page.locator("#lora-scale-watercolor").fill("0.65")
    expect(page.locator("#lora-list .lora[data-lora=watercolor] output")).to_have_text("0.65")

    # A custom size: the service's limits are shown and enforced before anything is sent.
    page.locator("#prompt").fill("a lighthouse on a cliff at sunset, soft watercolor")
    page.locator("#steps").fill("20")
    page.locator("#custom-size").check()
    expect(page.locator("#size-hint")).to_have_text(f"{MIN_SIDE}–{MAX_SIDE} px, multiples of {SIDE_MULTIPLE}")
    expect(page.locator("#ratios")).to_have_class(re.compile("greyed"))
    page.locator("#size-width").fill("1000")
    page.locator("#submit").click()
    expect(page.locator("#alert-text")).to_have_text("Width must be a multiple of 16 from 256 to 2048 (got 1000).")
    expect(page.locator("#size-width")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#tasks .task")).to_have_count(0)
    page.locator("#size-width").fill("768")
    page.locator("#size-height").fill("512")
    fields = submitted(page, "text-to-image")
    assert "aspect_ratio" not in fields and (text(fields["width"]), text(fields["height"])) == ("768", "512")
    assert text(fields["loras"]) == "watercolor:0.65,film-grain:0.6" and "speed" not in fields
    lighthouse = task_item(page, "a lighthouse on a cliff")
    expect(lighthouse).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)
    # The task card's thumbnail (384 pixels on the long side) of a 768×512 image.
    assert loaded_size(lighthouse.locator(".task-images img")) == [384, 256]
    parameters = newest_task(client, headers)["parameters"]
    assert [(a["name"], a["scale"]) for a in parameters["loras"]] == [("watercolor", 0.65), ("film-grain", 0.6)]
    page.screenshot(path=str(shots / "create-options.png"), full_page=True)

    # Fast mode: steps and CFG greyed out (the service ignores them); a ratio again ends the custom size.
    page.locator("#fast").check()
    expect(page.locator("#steps")).to_be_disabled()
    expect(page.locator("#cfg")).to_be_disabled()
    expect(page.locator("#fast-hint")).to_be_visible()
    page.locator("label[for=ratio-16-9]").click()
    expect(page.locator("#custom-size")).not_to_be_checked()
    expect(page.locator("#size-fields")).to_be_hidden()
    page.locator("#prompt").fill("a harbour town at dawn, fishing boats")
    fields = submitted(page, "text-to-image")
    assert text(fields["speed"]) == "fast" and text(fields["aspect_ratio"]) == "16:9" and "width" not in fields
    harbour = task_item(page, "a harbour town at dawn")
    expect(harbour).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)
    task = newest_task(client, headers)
    assert (task["parameters"]["speed"], task["parameters"]["num_inference_steps"]) == ("fast", 4)

    # Each gallery card says which options its task used, before a reload and after it (the cards
    # then come from the tasks' records); *Same settings again* puts them back into the form.
    def card(prompt: str):
        return page.locator("#gallery .shot").filter(has_text=prompt)

    def described() -> None:
        expect(card("a lighthouse").locator(".shot-meta")).to_contain_text("768×512 · watercolor:0.65 · film-grain:0.6")
        expect(card("a lighthouse").locator(".shot-meta")).not_to_contain_text("1:1")  # no ratio: a custom size
        expect(card("a harbour").locator(".shot-meta")).to_contain_text("16:9")
        expect(card("a harbour").locator(".shot-meta")).to_contain_text("watercolor:0.65 · film-grain:0.6 · Fast mode")

    described()
    page.reload()
    expect(page.locator("#whoami")).to_have_text(username)
    expect(page.locator("#gallery .shot")).to_have_count(2)
    expect(page.locator("#lora-list .lora")).to_have_count(0)  # a fresh page: nothing chosen yet
    expect(page.locator("#fast")).not_to_be_checked()
    described()
    page.get_by_role("link", name="Gallery").click()
    card("a harbour").locator(".again").click()
    expect(page.locator("#prompt")).to_have_value("a harbour town at dawn, fishing boats")
    expect(page.locator("#fast")).to_be_checked()
    expect(page.locator("#steps")).to_be_disabled()
    expect(page.locator("#ratio-16-9")).to_be_checked()
    expect(page.locator("#custom-size")).not_to_be_checked()
    expect(page.locator("#lora-list .lora")).to_have_count(2)
    page.get_by_role("link", name="Gallery").click()
    card("a lighthouse").locator("button.thumb").click()
    settings = page.locator("#viewer-settings")
    expect(settings).to_contain_text("Size768×512")
    expect(settings).to_contain_text("LoRAwatercolor:0.65, film-grain:0.6")
    expect(settings).not_to_contain_text("Fast mode")
    page.locator("#viewer-again").click()
    expect(page.locator("#prompt")).to_have_value("a lighthouse on a cliff at sunset, soft watercolor")
    expect(page.locator("#custom-size")).to_be_checked()
    expect(page.locator("#size-fields")).to_be_visible()
    expect(page.locator("#size-width")).to_have_value("768")
    expect(page.locator("#size-height")).to_have_value("512")
    expect(page.locator("#fast")).not_to_be_checked()
    expect(page.locator("#steps")).to_be_enabled()
    expect(page.locator("#lora-list .lora")).to_have_count(2)
    expect(page.locator("#lora-scale-watercolor")).to_have_value("0.65")
    expect(page.locator("#lora-scale-film-grain")).to_have_value("0.6")

    # Edit: the edit model's adapters, a list of its own; no custom size (the input decides).
    page.get_by_role("tab", name="Edit", exact=True).click()
    expect(page.locator("#lora-list .lora")).to_have_count(0)
    assert options_in(page) == ["studio-light"]
    expect(page.locator("#custom-size")).to_be_hidden()
    product = tmp_path / "teapot.png"
    product.write_bytes(image_bytes(size=(320, 240), color=(180, 140, 90)))
    page.locator("#files").set_input_files(str(product))
    page.locator("#lora-select").select_option("studio-light")
    # Showing the create view again reads the catalogue again and redraws the picker: the adapter
    # being chosen stays chosen (an answer landing between choosing and *Add* once dropped it).
    page.evaluate("""() => new MutationObserver((_, seen) => { seen.disconnect(); window.redrawn = true; })
        .observe(document.querySelector("#lora-select"), { childList: true })""")
    page.get_by_role("link", name="Gallery").click()
    expect(page.locator("#view-gallery")).to_be_visible()
    page.get_by_role("link", name="Create").click()
    page.wait_for_function("() => window.redrawn === true")
    expect(page.locator("#lora-select")).to_have_value("studio-light")
    page.locator("#lora-add").click()
    page.locator("#prompt").fill("put the teapot on a white studio background")
    page.locator("#steps").fill("20")
    fields = submitted(page, "image-edit")
    assert text(fields["loras"]) == "studio-light:1" and "width" not in fields and "speed" not in fields
    expect(task_item(page, "put the teapot")).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)

    # Image to image: back on text-to-image's weights, so its adapters come back; a custom size too.
    page.get_by_role("tab", name="Image to image").click()
    expect(page.locator("#lora-list .lora")).to_have_count(2)
    page.locator("#custom-size").check()
    page.locator("#size-width").fill("512")
    page.locator("#size-height").fill("512")
    page.locator("#prompt").fill("the same teapot as a watercolor")
    fields = submitted(page, "image-to-image")
    assert (text(fields["width"]), text(fields["height"])) == ("512", "512")
    assert text(fields["loras"]) == "watercolor:0.65,film-grain:0.6"
    redraw = task_item(page, "the same teapot as a watercolor")
    expect(redraw).to_have_attribute("data-status", "completed", timeout=TASK_TIMEOUT_MS)
    assert loaded_size(redraw.locator(".task-images img")) == [384, 384]  # of 512×512
    assert not w.errors, w.errors


def test_transparent_background_is_offered_only_where_the_model_draws_it(browser, base_url, client):
    username = register(client, "maria_lopes")
    w = open_page(browser, base_url)
    page = w.page
    with page.expect_response(re.compile(r"/models$")) as answer:
        log_in(page, username)
    real = answer.value.json()
    assert "transparent output" not in real["text_to_image"]["capabilities"]  # the tiny pair draws opaque images
    expect(page.locator("#transparent-box")).to_be_hidden()

    # /models answered as on a Qwen-Image 2.1 profile (a stand-in: the tests' service runs the tiny
    # pair). The box appears, and the request carries what the service reads: the tiny service
    # itself then refuses it, naming the profile that can.
    claimed = {kind: {**m, "capabilities": [*m["capabilities"], "transparent output"]} for kind, m in real.items()}
    page.route(re.compile(r"/models$"), lambda route: route.fulfill(json=claimed))
    page.reload()
    expect(page.locator("#transparent-box")).to_be_visible()
    page.locator("#transparent").check()
    page.locator("#prompt").fill("a glass perfume bottle, product cut-out")
    page.locator("#steps").fill("20")
    fields = submitted(page, "text-to-image")
    assert text(fields["background"]) == "transparent"
    expect(page.locator("#alert-text")).to_contain_text("qwen21")
    assert all("400" in e for e in w.errors), w.errors  # the browser logs the refused request itself


@pytest.fixture(scope="module")
def acct_url(deploy_app, data_root) -> str:
    return deploy_app(
        "acct",
        sleep_app_args(
            data_root,
            "acct",
            sleep_seconds_per_step=0.01,
            model_replicas=1,
            webhook_allow_private_networks=True,
            webhook_retry_schedule=[0.3, 0.3],
            webhook_retry_jitter=0.0,
            webhook_timeout_seconds=2.0,
        ),
    )


def test_a_newcomer_finds_their_api_key_uses_it_and_revokes_it(browser, acct_url, shots):
    w = open_page(browser, acct_url)
    page = w.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=acct_url.split("/acct")[0])
    page.locator("input[name=username]").fill("maria")
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("#register").click()
    expect(page.locator("#whoami")).to_have_text("maria")

    page.get_by_role("link", name="Account").click()
    expect(page.locator("#view-account")).to_be_visible()
    expect(page.locator("#keys-table tbody")).to_have_text("No keys yet.")
    expect(page.locator("#deliveries-empty")).to_be_visible()
    expect(page.locator("#secret-value")).to_have_value(re.compile(r"^whsec_•+$"))  # masked until asked

    # Create a key: shown once, with a copy button and an example that works as it is.
    page.locator("#key-name").fill("laptop script")
    page.locator("#key-create").click()
    expect(page.locator("#new-key")).to_be_visible()
    key = page.locator("#new-key-value").input_value()
    assert key.startswith("qis-") and len(key) > 40
    expect(page.locator("#new-key-example")).to_have_text(f'curl -H "Authorization: Bearer {key}" {acct_url}/auth/me')
    page.locator("#new-key-copy").click()
    expect(page.locator("#new-key-copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = page.locator("#keys-table tbody tr").filter(has_text="laptop script")
    expect(row).to_have_count(1)
    expect(row.locator("code")).to_have_text(key[:API_KEY_DISPLAY_CHARS] + "…")
    page.screenshot(path=str(shots / "account-new-key.png"), full_page=True)

    # The key works for a real HTTP call, without logging in; a task with a webhook to a receiver.
    with httpx.Client(base_url=acct_url, headers=bearer(key), timeout=60) as api, Receiver() as receiver:
        me = api.get("/auth/me")
        assert me.status_code == 200 and me.json()["username"] == "maria"
        submitted_task = api.post(
            "/text-to-image",
            data={"prompt": "a cosy reading nook, morning light", "webhook_url": receiver.url("/qwen-hooks")},
        )
        assert submitted_task.status_code == 202, submitted_task.text
        task_id = submitted_task.json()["task_id"]
        wait_status(api, {}, task_id)
        delivered = receiver.wait_for(lambda received: len(received) >= 1)[0]

        # Shown once: after "Done" and a reload the page has only the key's first characters.
        page.locator("#new-key-done").click()
        expect(page.locator("#new-key")).to_be_hidden()
        page.reload()
        expect(page.locator("#view-account")).to_be_visible()
        expect(row.locator("code")).to_have_text(key[:API_KEY_DISPLAY_CHARS] + "…")
        assert key not in page.content()

        # The webhook secret: shown on request, the one that signed the delivery.
        page.locator("#secret-show").click()
        secret = page.locator("#secret-value").input_value()
        assert secret.startswith("whsec_") and secret == api.get("/auth/webhook-secret").json()["secret"]
        assert Webhook(secret).verify(delivered.body, delivered.headers)["type"] == "task.completed"

        # Recent deliveries: the one the receiver got, delivered at the first attempt.
        page.locator("#deliveries-refresh").click()
        delivery = page.locator("#deliveries-table tr.delivery").first
        expect(delivery).to_have_attribute("data-webhook-id", delivered.webhook_id)
        expect(delivery).to_have_attribute("data-status", "delivered")
        expect(delivery).to_contain_text("task.completed")
        expect(delivery).to_contain_text(receiver.url("/qwen-hooks"))
        expect(delivery.locator(".attempts")).to_contain_text("HTTP 200")
        expect(delivery.locator("code")).to_have_text(task_id[:8])
        page.screenshot(path=str(shots / "account.png"), full_page=True)

        # Rotate (a second press confirms): a new secret, the service's from now on.
        page.locator("#secret-rotate").click()
        expect(page.locator("#secret-rotate")).to_have_text("Rotate — sure?")
        page.locator("#secret-rotate").click()
        expect(page.locator("#secret-value")).not_to_have_value(secret)
        rotated = page.locator("#secret-value").input_value()
        assert rotated.startswith("whsec_") and rotated == api.get("/auth/webhook-secret").json()["secret"]

        # Revoke (a second press confirms): the same call now fails.
        row.locator(".key-revoke").click()
        row.locator(".key-revoke").click()
        expect(page.locator("#keys-table tbody")).to_have_text("No keys yet.")
        expect(page.locator("#alert-text")).to_have_text("Key laptop script revoked: it no longer works.")
        assert api.get("/auth/me").status_code == 401

    assert not w.errors, w.errors
    assert not w.dialogs


def test_recent_deliveries_are_the_callers_own(acct_url):
    with httpx.Client(base_url=acct_url, timeout=60) as api:
        name = register(api, "joao")
        token = login(api, name, PASSWORD)
        mine = api.get("/auth/webhook-deliveries", headers=bearer(token))
        assert mine.status_code == 200 and mine.json() == []  # maria's deliveries are not shown to joão
        assert api.get("/auth/webhook-deliveries", headers=bearer(token), params={"limit": 0}).status_code == 400
        assert api.get("/auth/webhook-deliveries").status_code == 401

"""Every client-facing error of the real app in the language asked for: the LoRA routes, the
``loras`` option and request validation, with ``Accept-Language: en`` and without it.

English answers carry no Chinese; Chinese answers (the default) carry no English sentence such as
pydantic's "Input should be …". Constraint values and names stay as they are in both.
"""

from __future__ import annotations

import io
import re
import struct

import pytest
from safetensors.torch import save

from i18n import messages
from models.adapters import AdapterError, check_lora_file, parse_adapter_uses
from models.tiny_adapter import build_tiny_lora
from serving.adapter_options import adapter_reason
from tests.inprocess.conftest import login, make_client, png
from tests.inprocess.test_loras import lora_of_mb

pytestmark = pytest.mark.unit

CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
# Three Latin words in a row: an English phrase inside a Chinese answer ("Input should be", "is not a").
ENGLISH_PHRASE = re.compile(r"[A-Za-z]+ [A-Za-z]+ [A-Za-z]+")
EN = {"Accept-Language": "en-US,en;q=0.9"}


@pytest.fixture(scope="module")
def lora_bytes(tmp_path_factory) -> bytes:
    path = build_tiny_lora("text_to_image", str(tmp_path_factory.mktemp("lora")), seed=5)
    with open(path, "rb") as file:
        return file.read()


def assert_in_both_languages(send, status_code: int, english: str, chinese: str) -> None:
    """``send(headers)`` answers ``status_code`` with ``english`` under ``Accept-Language: en`` and
    ``chinese`` without it (each a part of the detail), one language each."""
    answer = send(EN)
    assert answer.status_code == status_code, answer.text
    detail = answer.json()["detail"]
    assert english in detail and not CJK.search(detail), detail
    answer = send({})
    assert answer.status_code == status_code, answer.text
    detail = answer.json()["detail"]
    assert chinese in detail and not ENGLISH_PHRASE.search(detail), detail


def upload(client, headers, name: str, data: bytes, filename: str = "", **fields):
    return client.post(
        "/admin/loras",
        headers=headers,
        data={"name": name, "model": "text_to_image", **fields},
        files={"file": (filename or f"{name}.safetensors", io.BytesIO(data), "application/octet-stream")},
    )


def test_every_lora_registration_error_is_in_the_language_asked_for(tmp_path, lora_bytes):
    with make_client(tmp_path, adapter_cache_mb=1) as client:
        admin = login(client, "admin", "admin123")
        (tmp_path / "loras" / "styles").mkdir(parents=True)
        (tmp_path / "loras" / "styles" / "clay.safetensors").write_bytes(lora_bytes)
        (tmp_path / "loras" / "styles" / "empty.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
        assert upload(client, admin, "ink", lora_bytes).status_code == 201
        hub = {"name": "other", "model": "text_to_image", "source": "hub:o/r", "weight_name": "w.safetensors"}

        def post(data, **files):
            return lambda headers: client.post("/admin/loras", headers={**admin, **headers}, data=data, files=files)

        cases = [
            (post({**hub, "model": "video"}), 400, "Parameter model: choose one of: text_to_image", "参数 model 无效"),
            (post({**hub, "name": "lightning"}), 400, "lightning is reserved", "lightning 是保留名称"),
            (post({"name": "x", "model": "text_to_image"}), 400, "exactly one of source and file", "只能提供"),
            (post({**hub, "name": "ink"}), 409, "LoRA ink already exists", "LoRA ink 已存在"),
            (post({**hub, "source": "hub:not a repo"}), 400, "followed by <owner>/<repo>", "之后应为"),
            (post({**hub, "weight_name": "w.bin"}), 400, "needs the name of a .safetensors", "文件名"),
            (post({**hub, "source": "ftp://x"}), 400, "must start with hub: or local:", "应以 hub: 或 local: 开头"),
            (post({**hub, "source": "local:../x.safetensors"}), 400, "inside LORA_DIR", "位于 LORA_DIR 之内"),
            (post({**hub, "source": "local:missing.safetensors"}), 400, "no file missing", "没有文件 missing"),
            (post({**hub, "source": "local:styles/x\x00"}), 400, "cannot be resolved", "无法解析"),
            (
                post({**hub, "source": "local:styles/empty.safetensors"}),
                400,
                "LoRA file styles/empty.safetensors is invalid: the file holds no tensors",
                "文件中没有任何张量",
            ),
            (
                lambda headers: upload(client, {**admin, **headers}, "zip", b"PK\x03\x04"),
                400,
                "is invalid: it is not a valid .safetensors file",
                "不是有效的 .safetensors 文件",
            ),
            (
                lambda headers: upload(client, {**admin, **headers}, "ckpt", lora_bytes, filename="ink.ckpt"),
                400,
                "must be a .safetensors file",
                "必须是 .safetensors 格式",
            ),
            (
                lambda headers: upload(
                    client, {**admin, **headers}, "plain", save({"proj.weight": __import__("torch").zeros(2, 2)})
                ),
                400,
                "holds no LoRA weights",
                "没有 LoRA 权重",
            ),
            (
                lambda headers: upload(client, {**admin, **headers}, "big", lora_of_mb(1.5)),
                400,
                "more than each replica's LoRA cache of 1 MB",
                "超过每个副本的 LoRA 缓存 1 MB",
            ),
            (
                lambda headers: client.delete("/admin/loras/nobody", headers={**admin, **headers}),
                404,
                "LoRA nobody not found",
                "LoRA nobody 不存在",
            ),
        ]
        for send, status_code, english, chinese in cases:
            assert_in_both_languages(send, status_code, english, chinese)


def test_an_oversized_lora_upload_is_413_in_the_language_asked_for(tmp_path, lora_bytes):
    with make_client(tmp_path, lora_max_upload_mb=1) as client:
        admin = login(client, "admin", "admin123")
        assert_in_both_languages(
            lambda headers: upload(client, {**admin, **headers}, "big", lora_bytes + b"\0" * (3 * 2**19)),
            413,
            "Upload too large: a LoRA file may have at most 1 MB",
            "上传内容过大：LoRA 文件最大 1 MB",
        )


def test_every_loras_option_error_is_in_the_language_asked_for(tmp_path, lora_bytes):
    with make_client(tmp_path, adapter_cache_size=1) as client:
        admin = login(client, "admin", "admin123")
        for name in ("ink", "neon"):
            assert upload(client, admin, name, lora_bytes).status_code == 201

        def submit(loras: str, path: str = "/text-to-image"):
            files = {"images": ("a.png", png(), "image/png")} if path == "/image-edit" else None
            data = {"prompt": "a cat", "loras": loras}
            return lambda headers: client.post(path, headers={**admin, **headers}, data=data, files=files)

        cases = [
            (submit("nobody"), "Parameter loras: unknown LoRA nobody (see GET /loras)", "未知的 LoRA nobody"),
            (submit("ink:9"), "must be between -2.0 and 2.0, got 9.0", "必须在 -2.0 到 2.0 之间"),
            (submit("ink:strong"), "the scale strong of LoRA ink is not a number", "的权重 strong 不是数字"),
            (submit(":1"), "a LoRA name is missing in :1", ":1 缺少 LoRA 名称"),
            (submit("ink,ink"), "LoRA ink is named twice", "LoRA ink 出现了两次"),
            (submit("a,b,c,d"), "at most 3 LoRAs per request, got 4", "每个请求最多 3 个 LoRA"),
            (submit("ink", "/image-edit"), "LoRA ink is for text_to_image, not for image_edit", "不能用于 image_edit"),
            (submit("ink,neon"), "each replica keeps at most 1 (ADAPTER_CACHE_SIZE)", "每个副本最多保留 1 个"),
        ]
        for send, english, chinese in cases:
            assert_in_both_languages(send, 400, english, chinese)


def test_every_adapter_error_a_client_can_cause_names_a_catalogue_message(tmp_path):
    problems = []
    for text in ("x:1,:2", "x:big", "x:5", "x,x", "a,b,c,d"):
        with pytest.raises(AdapterError) as raised:
            parse_adapter_uses(text)
        problems.append(raised.value)
    for name, content in (("zip", b"PK"), ("empty", struct.pack("<Q", 2) + b"{}")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(AdapterError) as raised:
            check_lora_file(str(tmp_path / name))
        problems.append(raised.value)
    for problem in problems:
        assert adapter_reason(problem) != messages.ADAPTER_INVALID, problem


@pytest.mark.parametrize(
    "fields, english, chinese",
    [
        ({"num_inference_steps": "5"}, "num_inference_steps must be greater than or equal to 20", "必须大于或等于 20"),
        ({"num_inference_steps": "500"}, "num_inference_steps must be less than or equal to 100", "必须小于或等于 100"),
        ({"num_images": "many"}, "Parameter num_images must be a whole number", "参数 num_images 必须是整数"),
        ({"true_cfg_scale": "lots"}, "Parameter true_cfg_scale must be a number", "参数 true_cfg_scale 必须是数字"),
        ({"async_mode": "perhaps"}, "Parameter async_mode must be true or false", "必须是 true 或 false"),
        ({"negative_prompt": "x" * 5000}, "negative_prompt may have at most", "最多"),
        ({"speed": "turbo"}, "Parameter speed must be one of: standard, fast", "必须是以下之一：standard, fast"),
        ({"prompt": None}, "Missing required parameter prompt", "缺少必填参数 prompt"),
    ],
)
def test_validation_errors_are_whole_sentences_in_the_language_asked_for(client, fields, english, chinese):
    admin = login(client, "admin", "admin123")
    data = {k: v for k, v in {"prompt": "a cat", **fields}.items() if v is not None}
    assert_in_both_languages(
        lambda headers: client.post("/text-to-image", headers={**admin, **headers}, data=data), 400, english, chinese
    )


def test_json_body_errors_are_whole_sentences_in_the_language_asked_for(client):
    def login_with(body: bytes):
        headers = {"Content-Type": "application/json"}
        return lambda extra: client.post("/auth/login", content=body, headers={**headers, **extra})

    assert_in_both_languages(login_with(b'{"username": "a"'), 400, "could not be parsed", "无法解析")
    assert_in_both_languages(login_with(b"[1, 2]"), 400, "takes a JSON object", "需要 JSON 对象")
    assert_in_both_languages(login_with(b'{"username": "a"}'), 400, "Missing required parameter password", "password")
    assert_in_both_languages(
        login_with(b'{"username": ["a"], "password": "p"}'), 400, "username must be a string", "必须是字符串"
    )


def test_a_generic_validation_error_is_still_a_whole_sentence():
    reason = messages.PARAM_VALUE_INVALID(field="when")
    assert reason.render("en") == "Parameter when has an invalid value" and reason == "参数 when 的值无效"


@pytest.mark.parametrize(
    ("url", "english", "chinese"),
    [
        ("http://127.0.0.1/hook", "resolves to a loopback address", "解析为回环地址"),
        ("ftp://example.com/hook", "only http and https URLs are allowed", "只允许 http 和 https URL"),
        ("http://user:pw@example.com/", "credentials in the URL are not allowed", "URL 中不允许带凭据"),
    ],
)
def test_a_refused_webhook_url_says_why_in_the_language_asked_for(client, url, english, chinese):
    """The SSRF guard's reason is a catalogue sentence too, not English inside a Chinese answer."""
    headers = login(client, "admin", "admin123")
    assert_in_both_languages(
        lambda extra: client.post(
            "/text-to-image", headers={**headers, **extra}, data={"prompt": "x", "webhook_url": url}
        ),
        400,
        english,
        chinese,
    )

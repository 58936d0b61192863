"""The message catalogue: both languages for every id, the contract's Chinese kept, whole English sentences.

No Ray: the error paths run in a small FastAPI app with the service's own error handlers, body
limit middleware, upload checks and quota refusal, through Starlette's TestClient.
"""

from __future__ import annotations

import io
import pickle
import re

import pytest
import sqlalchemy.exc
from fastapi import FastAPI, Form, UploadFile
from fastapi.testclient import TestClient
from PIL import Image

from i18n import messages
from models.kinds import ModelKind
from serving.errors import install_error_handlers
from serving.middleware import BodyLimitMiddleware
from serving.uploads import decode_image, read_limited

pytestmark = pytest.mark.unit

CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
EN = {"Accept-Language": "en-US,en;q=0.9"}
UPLOAD_LIMIT = 1024 * 1024


def _sample(template: messages.Template) -> messages.Message:
    return template(**{name: f"<{name}>" for name in template.fields})


@pytest.mark.parametrize("message_id", sorted(messages.CATALOGUE))
def test_every_message_has_both_languages_with_the_same_placeholders(message_id):
    template = messages.CATALOGUE[message_id]
    zh, en = template.texts["zh"], template.texts["en"]
    assert zh.strip() and en.strip()
    assert messages.placeholders(zh) == messages.placeholders(en) == template.fields
    assert not CJK.search(en), f"{message_id}: the English template has Chinese in it"
    if message_id != "several":  # the one entry made only of placeholders
        assert CJK.search(zh), f"{message_id}: the Chinese template has no Chinese in it"


def test_templates_with_different_placeholders_are_refused():
    with pytest.raises(ValueError):
        messages.Template("mismatch", "参数 {field} 无效", "Invalid parameter {name}")
    with pytest.raises(TypeError):
        messages.PARAM_EMPTY(name="prompt")


def test_the_chinese_texts_are_the_contracts_and_a_message_is_that_string():
    # Texts existing clients compare (api-contract.md and v1.3.0's wording).
    assert messages.REGISTRATION_CLOSED == "当前不允许用户注册"
    assert messages.TASK_NOT_FOUND == "任务不存在"
    assert messages.TASK_ACCEPTED == "任务已提交"
    assert messages.MODEL_NOT_LOADED[ModelKind.text_to_image] == "文生图模型未加载"
    assert messages.MODEL_NOT_LOADED[ModelKind.image_edit] == "图像编辑模型未加载"
    assert (
        messages.QUOTA_DAILY.format(limit=100, resets_at="2026-01-02T00:00:00+00:00")
        == "已达到每日配额上限（100），将于 2026-01-02T00:00:00+00:00 重置"
    )
    assert messages.IMAGE_INVALID(name="a.png", reason=messages.IMAGE_EMPTY) == "图片 a.png 无效：文件为空"
    assert (
        messages.join([messages.PARAM_MISSING(field="prompt"), messages.PARAM_INVALID(field="seed", reason="x")])
        == "缺少必填参数 prompt；参数 seed 无效：x"
    )
    assert isinstance(messages.TASK_NOT_FOUND, str) and str(messages.TASK_NOT_FOUND) == "任务不存在"


@pytest.mark.parametrize("message_id", sorted(messages.CATALOGUE))
def test_a_stored_chinese_text_is_recognised_as_its_message(message_id):
    message = _sample(messages.CATALOGUE[message_id])
    recognised = messages.recognise(str(message))
    assert isinstance(recognised, messages.Message) and recognised == message
    if message_id != "several":
        assert recognised.id == message_id
    assert messages.recognise("some text from elsewhere") == "some text from elsewhere"


def test_a_message_survives_pickling_with_its_parameters():
    message = messages.TASK_FAILED_BECAUSE(error=messages.GENERATION_FAILED(error="RuntimeError: boom"))
    copy = pickle.loads(pickle.dumps(message))
    assert copy == message and copy.render("en") == "The task failed: Generation failed (RuntimeError: boom)"


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, "zh"),
        ("", "zh"),
        ("*", "zh"),
        ("en", "en"),
        ("en-US,en;q=0.9", "en"),
        ("EN-gb", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("fr-FR, en;q=0.5", "en"),
        ("zh;q=0.2, en;q=0.3", "en"),
        ("de", "zh"),
        ("en;q=0", "zh"),
        ("en;q=bad", "zh"),
    ],
)
def test_the_language_follows_accept_language(header, expected):
    assert messages.language(header) == expected


@pytest.fixture(scope="module")
def client() -> TestClient:
    from serving.protocol import QuotaRefused
    from serving.routes.common import refusal

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/upload")
    async def upload(image: UploadFile):
        data = await read_limited(image, UPLOAD_LIMIT)
        decode_image(data, image.filename, max_pixels=4096 * 4096)
        return {"ok": True}

    @app.post("/generate")
    async def generate(steps: int = Form(ge=20, le=100), prompt: str = Form()):
        return {"ok": True}

    @app.post("/quota")
    async def quota():
        raise refusal(QuotaRefused(period="daily", limit=100, used=100, resets_at="2026-01-02T00:00:00+00:00"))

    @app.post("/failed")
    async def failed():
        from serving.routes.common import result_response

        # A failure as the registry stores it: a plain string read back from the database.
        await result_response(None, "t1", "failed", f"{messages.RESULT_WRITE_FAILED}: [Errno 28] No space left")

    wrapped = BodyLimitMiddleware(app, lambda path: UPLOAD_LIMIT)
    return TestClient(wrapped)


def _png(size=(8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "red").save(out, "PNG")
    return out.getvalue()


def _bmp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(out, "BMP")
    return out.getvalue()


@pytest.mark.parametrize(
    "content, chinese, english",
    [
        (
            _bmp(),
            "图片 holiday.bmp 无效：不支持的格式 BMP，仅支持 JPEG、PNG、WebP",
            "Image holiday.bmp is invalid: unsupported format BMP; only JPEG, PNG and WebP are accepted",
        ),
        (
            _png(),
            "图片 holiday.bmp 无效：尺寸 8×8 过小（每边至少 16 像素）",
            "Image holiday.bmp is invalid: its size 8×8 is too small (at least 16 pixels a side)",
        ),
        (b"", "图片 holiday.bmp 无效：文件为空", "Image holiday.bmp is invalid: the file is empty"),
    ],
)
def test_an_upload_error_with_a_file_name_is_one_language(client, content, chinese, english):
    files = {"image": ("holiday.bmp", content, "image/bmp")}
    default = client.post("/upload", files=files)
    assert default.status_code == 400 and default.json() == {"detail": chinese}
    answer = client.post("/upload", files=files, headers=EN)
    assert answer.status_code == 400 and answer.json() == {"detail": english}
    assert not CJK.search(answer.text)


def test_an_upload_over_the_limit_is_refused_in_english_by_the_middleware(client):
    big = {"image": ("big.png", b"\0" * (UPLOAD_LIMIT + 1), "image/png")}
    answer = client.post("/upload", files=big, headers=EN)
    assert answer.status_code == 413 and answer.json() == {"detail": "Upload too large: at most 1 MB per file"}
    assert client.post("/upload", files=big).json() == {"detail": "上传内容过大：每个文件最大 1 MB"}


def test_the_quota_message_is_english(client):
    answer = client.post("/quota", headers=EN)
    assert answer.status_code == 429
    assert answer.json() == {"detail": "The daily quota (100) is used up; it resets at 2026-01-02T00:00:00+00:00"}
    assert client.post("/quota").json() == {"detail": "已达到每日配额上限（100），将于 2026-01-02T00:00:00+00:00 重置"}


def test_a_validation_message_is_english(client):
    answer = client.post("/generate", data={"steps": "500"}, headers=EN)
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert detail == "Parameter steps must be less than or equal to 100; Missing required parameter prompt"
    assert not CJK.search(answer.text)
    chinese = client.post("/generate", data={"steps": "500"}).json()["detail"]
    assert chinese == "参数 steps 必须小于或等于 100；缺少必填参数 prompt"


def test_a_stored_task_failure_is_english(client):
    answer = client.post("/failed", headers=EN)
    assert answer.status_code == 500
    assert answer.json() == {"detail": "The task failed: Writing the result failed: [Errno 28] No space left"}
    assert client.post("/failed").json() == {"detail": "任务执行失败: 结果写入失败: [Errno 28] No space left"}


@pytest.mark.parametrize(
    "error",
    [
        sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused at /var/run/secret.sock")),
    ],
    ids=["pool-drained", "database-unreachable"],
)
@pytest.mark.parametrize("path", ["/native", "/v1/native"])
def test_a_busy_or_unreachable_database_is_a_503_to_retry_not_a_500(error, path):
    app = FastAPI()
    install_error_handlers(app)

    @app.get(path)
    def broken():
        raise error

    answer = TestClient(app, raise_server_exceptions=False).get(path, headers={"Accept-Language": "en"})
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "2"
    text = answer.text
    assert "try again" in text and "QueuePool" not in text and "secret.sock" not in text
    if path.startswith("/v1"):
        assert answer.json()["error"]["message"].startswith("The database is busy")
    else:
        assert answer.json() == {"detail": "The database is busy or briefly unavailable; try again shortly"}

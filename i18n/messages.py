"""The catalogue of client-facing messages: one id, a Chinese and an English template each.

The service's users read Chinese, and the API contract gives the Chinese wording existing clients
compare against; ``Accept-Language: en`` gets the English sentence instead (error ``detail``s; see
:func:`render`). A :class:`Message` is a ``str`` equal to its Chinese text, so it can go wherever a
string went before (``HTTPException(404, messages.TASK_NOT_FOUND)``, a stored task error, a JSON
body) and still carries its id and parameters, from which the error handlers render either
language. Entries without placeholders are messages themselves; the others are :class:`Template`s,
called with their parameters::

    raise HTTPException(400, messages.PARAM_EMPTY(field="prompt"))

A parameter that is itself a message renders in the same language as the one around it. Texts
that crossed a process or the database as plain strings (a failed task's stored error) are turned
back into messages by :func:`recognise`.

Success bodies (``{"message": ...}``) stay in Chinese whatever the request asks: clients of v1.3.0
compare them, and browsers send ``Accept-Language: en`` on their own.
"""

from __future__ import annotations

import re
import string
from typing import Any, Optional, Union

from models.kinds import ModelKind

# An absolute POSIX path of two or more parts (what an OSError or a library error carries).
_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"():,/]+/)+([^\s'\"():,/]+)")


def without_server_paths(text: str) -> str:
    """``text`` with absolute server paths cut to their last part: the layout of the host is not the client's."""
    return _SERVER_PATH.sub(r"…/\1", text)


LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"

CATALOGUE: dict[str, Template] = {}


def placeholders(template: str) -> set[str]:
    """The ``{name}`` fields of a template."""
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


class Template:
    """A catalogue entry: an id and one template per language, with the same placeholders."""

    def __init__(self, message_id: str, zh: str, en: str):
        if placeholders(zh) != placeholders(en):
            raise ValueError(f"message {message_id}: the templates' placeholders differ")
        self.id, self.texts = message_id, {"zh": zh, "en": en}
        self.fields = placeholders(zh)
        self._pattern: Optional[re.Pattern] = None

    def __call__(self, **params: Any) -> Message:
        if set(params) != self.fields:
            raise TypeError(f"message {self.id} takes {sorted(self.fields)}, got {sorted(params)}")
        return Message(self, params)

    # Call sites written for the former format strings (``QUOTA_DAILY.format(limit=…)``) keep working.
    format = __call__

    def fill(self, language: str, params: dict[str, Any]) -> str:
        values = {name: render(value, language) for name, value in params.items()}
        return self.texts[language].format_map(values)

    def match(self, text: str) -> Optional[dict[str, str]]:
        """The parameters that make the Chinese template read ``text``, or None."""
        if self._pattern is None:
            pieces = []
            for literal, field, _, _ in string.Formatter().parse(self.texts["zh"]):
                pieces.append(re.escape(literal))
                if field is not None:
                    pieces.append(f"(?P<{field}>.*?)")
            self._pattern = re.compile("".join(pieces), re.DOTALL)
        found = self._pattern.fullmatch(text)
        return found.groupdict() if found else None

    def __repr__(self) -> str:
        return f"<Template {self.id}>"


class Message(str):
    """A message with its parameters filled in; as a ``str`` it is the Chinese text."""

    template: Template
    params: dict[str, Any]

    def __new__(cls, template: Template, params: dict[str, Any]) -> Message:
        self = super().__new__(cls, template.fill(DEFAULT_LANGUAGE, params))
        self.template, self.params = template, params
        return self

    @property
    def id(self) -> str:
        return self.template.id

    def render(self, language: str) -> str:
        return self.template.fill(language if language in LANGUAGES else DEFAULT_LANGUAGE, self.params)

    def __reduce__(self):  # across Ray by id, so both ends share the one catalogue
        return _rebuild, (self.template.id, self.params)

    def __repr__(self) -> str:
        return f"<Message {self.template.id} {str(self)!r}>"


def _rebuild(message_id: str, params: dict[str, Any]) -> Message:
    return Message(CATALOGUE[message_id], params)


def _entry(message_id: str, zh: str, en: str) -> Any:
    """Adds an entry; one without placeholders is returned as its message, the others as templates."""
    if message_id in CATALOGUE:
        raise ValueError(f"message id {message_id} is defined twice")
    template = CATALOGUE[message_id] = Template(message_id, zh, en)
    return template() if not template.fields else template


def language(accept_language: Optional[str]) -> str:
    """``en`` when the ``Accept-Language`` header prefers English to Chinese, else ``zh``.

    Quality values count (``zh-CN,zh;q=0.9,en;q=0.8`` is Chinese); between equal ones the first
    listed wins; languages the service does not speak, and ``*``, are passed over.
    """
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for item in (accept_language or "").split(","):
        tag, _, rest = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        q = 1.0
        for param in rest.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best, best_q = primary, q
    return best


def render(value: Any, language: str) -> Any:
    """``value`` in ``language``: a message rendered, a plain string recognised first, anything else as is."""
    if isinstance(value, str) and not isinstance(value, Message) and language != DEFAULT_LANGUAGE:
        value = recognise(value)
    if isinstance(value, Message):
        return value.render(language)
    if isinstance(value, str):
        return str(value)
    return value


def recognise(text: Optional[str], _depth: int = 0) -> Union[Message, str, None]:
    """The catalogue message whose Chinese text is ``text`` (parameters recognised in turn), else ``text``.

    For texts that travelled as plain strings: a task error read back from the database, a message
    raised by code that predates the catalogue.
    """
    if text is None or isinstance(text, Message) or _depth > 3:
        return text
    if text in _BY_TEXT:
        return _BY_TEXT[text]
    for template in _TEMPLATES:
        params = template.match(text)
        if params is not None:
            return template(**{name: recognise(value, _depth + 1) for name, value in params.items()})
    return text


def join(parts: list[Message]) -> Message:
    """Several messages as one (each rendered in the same language)."""
    if len(parts) == 1:
        return parts[0]
    return SEVERAL(first=parts[0], rest=join(parts[1:]))


SEVERAL = _entry("several", "{first}；{rest}", "{first}; {rest}")

# Tasks
TASK_ACCEPTED = _entry("task_accepted", "任务已提交", "The task was accepted")
TASK_NOT_FOUND = _entry("task_not_found", "任务不存在", "Task not found")
# Each model kind's "not loaded" message lives in its row of the kind table (models.kinds).
MODEL_NOT_LOADED = {
    kind: _entry(f"{kind.value}_not_loaded", kind.spec.not_loaded, kind.spec.not_loaded_en) for kind in ModelKind
}
REGISTRY_UNAVAILABLE = _entry(
    "registry_unavailable", "任务服务正在重启，请稍后重试", "The task service is restarting; retry shortly"
)
QUEUE_FULL = _entry("queue_full", "任务队列已满，请稍后重试", "The task queue is full; retry later")
TOO_MANY_WAITS = _entry(
    "too_many_waits",
    "同时等待结果的请求过多（每个用户最多 {limit} 个），请稍后重试或使用异步模式",
    "Too many of your requests are waiting for results at once (at most {limit}); retry later or use async mode",
)
SERVER_BUSY = _entry("server_busy", "服务繁忙，请稍后重试", "The server is busy; retry shortly")
TOO_MANY_PENDING = _entry(
    "too_many_pending",
    "排队中的任务过多（每个用户最多 {limit} 个），请等待已提交的任务完成",
    "Too many of your tasks are waiting (at most {limit}); wait for them to finish",
)
WAIT_TIMEOUT = _entry("wait_timeout", "等待任务结果超时", "Timed out waiting for the task result")
TASK_CANCELLED = _entry("task_cancelled", "任务已取消", "The task was cancelled")
CANCEL_REQUESTED = _entry(
    "cancel_requested", "已请求取消，任务将在下一步停止", "Cancellation requested; the task stops at its next step"
)
TASK_FAILED = _entry("task_failed", "任务执行失败", "The task failed")
TASK_FAILED_BECAUSE = _entry("task_failed_because", "任务执行失败: {error}", "The task failed: {error}")
TASK_ALREADY_FINISHED = _entry(
    "task_already_finished", "任务已结束，无法取消", "The task has already finished and cannot be cancelled"
)
TASKS_CLEANED = _entry(
    "tasks_cleaned",
    "已清理 {memory_count} 个内存任务记录，{db_count} 个数据库历史记录",
    "Removed {memory_count} task records from memory and {db_count} history records from the database",
)
RESULT_MISSING = _entry("result_missing", "任务结果文件不存在", "The task's result file is missing")
TASK_NOT_FINISHED = _entry(
    "task_not_finished", "任务尚未完成，图片还不可用", "The task has not finished yet; its images are not available"
)
IMAGE_NOT_IN_TASK = _entry(
    "image_not_in_task",
    "没有第 {n} 张图片：该任务共有 {count} 张，从 0 开始编号",
    "There is no image {n}: this task has {count}, numbered from 0",
)
INPUT_NOT_IN_TASK = _entry(
    "input_not_in_task",
    "没有第 {n} 个输入图片：该任务共有 {count} 个，从 0 开始编号",
    "There is no input {n}: this task has {count}, numbered from 0",
)
INPUT_MISSING = _entry("input_missing", "该任务的输入图片已不再保存", "The task's input image is no longer stored")
QUOTA_DAILY = _entry(
    "quota_daily",
    "已达到每日配额上限（{limit}），将于 {resets_at} 重置",
    "The daily quota ({limit}) is used up; it resets at {resets_at}",
)
QUOTA_MONTHLY = _entry(
    "quota_monthly",
    "已达到每月配额上限（{limit}），将于 {resets_at} 重置",
    "The monthly quota ({limit}) is used up; it resets at {resets_at}",
)

# Why a task failed (stored with the task, shown in its status and in a synchronous answer)
REPLICA_CRASHED = _entry(
    "replica_crashed",
    "模型副本在执行任务时崩溃（已重试）",
    "The model replica crashed while running the task (it was retried)",
)
MODEL_DISABLED = _entry(
    "model_disabled",
    "任务所需的模型已停用，任务无法执行",
    "The model this task needs has been switched off; the task cannot run",
)
INTERRUPTED_BY_RESTART = _entry(
    "interrupted_by_restart",
    "服务重启时任务正在执行，已达到重试次数上限",
    "The task was running when the service restarted, and it has been retried as often as allowed",
)
RESULT_WRITE_FAILED = _entry("result_write_failed", "结果写入失败", "Writing the result failed")
RESULT_WRITE_FAILED_BECAUSE = _entry(
    "result_write_failed_because", "结果写入失败: {reason}", "Writing the result failed: {reason}"
)
OUT_OF_MEMORY = _entry(
    "out_of_memory",
    "显存或内存不足，请减少图片数量或稍后重试 ({error})",
    "Not enough GPU or host memory; request fewer images or retry later ({error})",
)
GENERATION_FAILED = _entry("generation_failed", "生成失败 ({error})", "Generation failed ({error})")

# Service
INTERNAL_ERROR = _entry("internal_error", "服务器内部错误", "Internal server error")
DATABASE_BUSY = _entry(
    "database_busy",
    "数据库繁忙或暂时不可用，请稍后重试",
    "The database is busy or briefly unavailable; try again shortly",
)
SERVICE_STARTING = _entry("service_starting", "服务正在启动", "The service is starting")

# Request validation
BODY_UNPARSABLE = _entry("body_unparsable", "请求体无法解析", "The request body could not be parsed")
BODY_NOT_OBJECT = _entry(
    "body_not_object",
    "请求体格式错误：此接口需要 JSON 对象",
    "Malformed request body: this endpoint takes a JSON object",
)
BODY_INVALID = _entry("body_invalid", "请求体无效", "The request body is invalid")
# Answered by Serve's proxy before any application sees the request (serving.proxy)
BODY_OVER_PROXY_CAP = _entry(
    "body_over_proxy_cap", "请求体过大：最大 {mb} MB", "The request body is too large: at most {mb} MB"
)
BODY_TIMED_OUT = _entry("body_timed_out", "请求体接收超时", "The request body did not arrive in time")
PARAM_MISSING = _entry("param_missing", "缺少必填参数 {field}", "Missing required parameter {field}")
PARAM_INVALID = _entry("param_invalid", "参数 {field} 无效：{reason}", "Parameter {field}: {reason}")
PARAMS_INVALID = _entry("params_invalid", "请求参数无效", "Invalid request parameters")
PARAM_EMPTY = _entry("param_empty", "参数 {field} 不能为空", "Parameter {field} must not be empty")
# Reasons a validator gives (shown after "参数 X 无效：" / "Parameter X is invalid: ")
REASON_NUL = _entry("reason_nul", "不能包含 NUL 字符", "must not contain NUL characters")
REASON_EMPTY = _entry("reason_empty", "不能为空", "must not be empty")
ASPECT_RATIO_UNSUPPORTED = _entry(
    "aspect_ratio_unsupported",
    "不支持的宽高比 {aspect_ratio}，可选：{choices}",
    "Unsupported aspect ratio {aspect_ratio}; choose one of: {choices}",
)
UNKNOWN_FIELDS = _entry(
    "unknown_fields",
    "不支持的参数：{fields}；本接口接受：{accepted}",
    "Unknown field(s): {fields}; this route accepts: {accepted}",
)
SIZE_OR_RATIO = _entry(
    "size_or_ratio",
    "请给出 aspect_ratio，或同时给出 width 和 height，不能混用",
    "Give aspect_ratio, or both width and height, not a mix",
)
SIDE_INVALID = _entry(
    "side_invalid",
    "{min_side} 到 {max_side} 之间 {multiple} 的倍数，收到 {value}",
    "a multiple of {multiple} from {min_side} to {max_side}, got {value}",
)
TOO_MANY_PROMPTS = _entry(
    "too_many_prompts",
    "参数 prompts 最多 {limit} 条，收到 {count} 条",
    "Parameter prompts takes at most {limit} prompts, got {count}",
)
PROMPT_TOO_LONG = _entry(
    "prompt_too_long", "参数 prompts 每条最多 {limit} 个字符", "Each of the prompts may have at most {limit} characters"
)

# Uploads
IMAGE_REQUIRED = _entry("image_required", "至少需要上传 1 张图片", "Upload at least 1 image")
TOO_MANY_IMAGES = _entry("too_many_images", "最多上传 {limit} 张图片", "Upload at most {limit} images")
UPLOAD_TOO_LARGE = _entry(
    "upload_too_large", "上传内容过大：每个文件最大 {limit_mb} MB", "Upload too large: at most {limit_mb} MB per file"
)
IMAGE_INVALID = _entry("image_invalid", "图片 {name} 无效：{reason}", "Image {name} is invalid: {reason}")
MASK_SIZE_MISMATCH = _entry(
    "mask_size_mismatch",
    "蒙版尺寸 {mask} 与图片尺寸 {image} 不一致",
    "The mask is {mask} but the image is {image}: they must be the same size",
)
MASK_EMPTY = _entry(
    "mask_empty",
    "蒙版没有需要重绘的区域（透明区域，或不透明蒙版中的白色区域）",
    "The mask marks nothing to repaint (transparent pixels, or white ones in an opaque mask)",
)
MASK_ONE_IMAGE = _entry(
    "mask_one_image",
    "蒙版只能与 1 张图片一起使用，收到 {count} 张",
    "A mask works on one image, got {count}",
)
MASK_OR_OUTPAINT = _entry(
    "mask_or_outpaint",
    "mask 与扩图参数（extend_*）不能同时使用",
    "Give a mask or the outpainting fields (extend_*), not both",
)
EXTEND_RATIO_OR_SIDES = _entry(
    "extend_ratio_or_sides",
    "extend_to 与 extend_left/top/right/bottom 不能同时使用",
    "Give extend_to or extend_left/top/right/bottom, not both",
)
STRENGTH_NEEDS_MASK = _entry(
    "strength_needs_mask",
    "strength 仅用于带蒙版的编辑（或 /image-to-image）",
    "strength applies to masked edits (or /image-to-image)",
)
RATIO_INVALID = _entry(
    "ratio_invalid",
    "形如 16:9 的比例（两个 1 到 100 的整数），收到 {value}",
    "a ratio like 16:9 (two whole numbers from 1 to 100), got {value}",
)
OUTPAINT_TOO_LARGE = _entry(
    "outpaint_too_large",
    "扩图后的画布 {width}x{height} 超过 {max_pixels} 像素",
    "The extended canvas would be {width}x{height}, more than {max_pixels} pixels",
)
EXTEND_NOTHING = _entry(
    "extend_nothing",
    "图片已是 {ratio} 比例，无需扩图",
    "The image already has the ratio {ratio}: there is nothing to extend",
)
# … the reasons, which fill IMAGE_INVALID's {reason}
IMAGE_EMPTY = _entry("image_empty", "文件为空", "the file is empty")
IMAGE_FORMAT = _entry(
    "image_format",
    "不支持的格式 {format}，仅支持 JPEG、PNG、WebP",
    "unsupported format {format}; only JPEG, PNG and WebP are accepted",
)
IMAGE_TOO_MANY_PIXELS = _entry(
    "image_too_many_pixels",
    "尺寸 {width}×{height} 超过上限 {max_pixels} 像素",
    "its size {width}×{height} exceeds the limit of {max_pixels} pixels",
)
IMAGE_TOO_SMALL = _entry(
    "image_too_small",
    "尺寸 {width}×{height} 过小（每边至少 {min_side} 像素）",
    "its size {width}×{height} is too small (at least {min_side} pixels a side)",
)
IMAGE_DECODES_TOO_LARGE = _entry(
    "image_decodes_too_large",
    "尺寸 {width}×{height} 解码后约 {decoded_mb} MB，超过上限 {max_mb} MB",
    "its size {width}×{height} would take about {decoded_mb} MB once decoded, over the limit of {max_mb} MB",
)
IMAGE_TRAILING_DATA = _entry(
    "image_trailing_data",
    "图片结尾之后还有多余数据（疑似伪装的复合文件）",
    "there is data after the image's end (possibly a disguised polyglot file)",
)
IMAGE_BOMB = _entry("image_bomb", "疑似解压炸弹（像素数过大）", "it looks like a decompression bomb (too many pixels)")
IMAGE_UNDECODABLE = _entry(
    "image_undecodable", "无法解析为图片（{error}）", "it cannot be decoded as an image ({error})"
)

# Accounts
INVALID_CREDENTIALS = _entry("invalid_credentials", "无效的认证凭据", "Invalid authentication credentials")
ADMIN_REQUIRED = _entry("admin_required", "需要管理员权限", "Administrator privileges are required")
CSRF_HEADER_MISSING = _entry(
    "csrf_header_missing",
    "浏览器会话的修改请求需要请求头 X-Requested-With: qwen-image",
    "Requests that change state with a browser session need the header X-Requested-With: qwen-image",
)
USERNAME_TAKEN = _entry("username_taken", "用户名已存在", "The username is already taken")
REGISTRATION_CLOSED = _entry("registration_closed", "当前不允许用户注册", "Registration is currently closed")
BAD_CREDENTIALS = _entry("bad_credentials", "用户名或密码错误", "Incorrect username or password")
USER_DISABLED = _entry("user_disabled", "用户已被禁用", "This user is disabled")
TOO_MANY_ATTEMPTS = _entry(
    "too_many_attempts", "登录失败次数过多，请稍后再试", "Too many failed logins; try again later"
)
TOO_MANY_LOGINS = _entry(
    "too_many_logins", "来自此地址的登录请求过多，请稍后再试", "Too many log-ins from this address; try again later"
)
TOO_MANY_REGISTRATIONS = _entry(
    "too_many_registrations",
    "来自此地址的注册请求过多，请稍后再试",
    "Too many registrations from this address; try again later",
)
WRONG_OLD_PASSWORD = _entry("wrong_old_password", "原密码错误", "The old password is incorrect")
USER_NOT_FOUND = _entry("user_not_found", "用户不存在", "User not found")
NOT_ON_SELF = _entry("not_on_self", "不能对自己的账号执行此操作", "Administrators cannot do this to their own account")
LAST_ADMIN = _entry("last_admin", "至少需要保留一个启用的管理员", "At least one active administrator must remain")
PASSWORD_CHANGED = _entry("password_changed", "密码修改成功", "The password was changed")
USER_ENABLED = _entry("user_enabled", "用户已启用", "The user is enabled")
USER_DISABLED_NOW = _entry("user_disabled_now", "用户已禁用", "The user is disabled")
USER_MADE_ADMIN = _entry("user_made_admin", "用户已设置为管理员", "The user is now an administrator")
USER_ADMIN_REVOKED = _entry("user_admin_revoked", "已取消用户的管理员权限", "The user is no longer an administrator")
USER_DELETED = _entry("user_deleted", "用户 {username} 已删除", "User {username} was deleted")

API_KEY_NOT_FOUND = _entry("api_key_not_found", "API 密钥不存在", "API key not found")
API_KEY_REVOKED = _entry("api_key_revoked", "API 密钥已撤销", "API key revoked")
# Event streams and webhooks
EVENT_STREAMS_PER_ADDRESS_LIMIT = _entry(
    "event_streams_per_address_limit",
    "来自此地址的事件流过多（最多 {limit} 个），请先关闭一些",
    "Too many open event streams from this address (at most {limit}); close some first",
)
EVENT_STREAMS_BUSY = _entry(
    "event_streams_busy",
    "服务器打开的事件流已满，请稍后再试",
    "The server holds all the event streams it can; try again later",
)
EVENT_STREAMS_LIMIT = _entry(
    "event_streams_limit",
    "打开的事件流过多（每个用户最多 {limit} 个），请先关闭一些",
    "Too many open event streams (at most {limit} per user); close some first",
)
NOT_AN_EVENT_ID = _entry("not_an_event_id", "必须是非负整数", "it must be a non-negative integer")
WEBHOOK_EVENT_UNKNOWN = _entry(
    "webhook_event_unknown", "未知事件 {name}，可选：{choices}", "unknown event {name}; choose from {choices}"
)
WEBHOOK_URL_REQUIRED = _entry("webhook_url_required", "需要同时提供 webhook_url", "it needs webhook_url as well")
WEBHOOK_URL_REFUSED = _entry(
    "webhook_url_refused", "不允许的地址（{reason}）", "this address is not allowed ({reason})"
)
# Why an outbound URL is refused (serving.ssrf): the reason inside WEBHOOK_URL_REFUSED
URL_EMPTY = _entry("url_empty", "URL 为空", "the URL is empty")
URL_TOO_LONG = _entry("url_too_long", "URL 超过 {limit} 个字符", "the URL is longer than {limit} characters")
URL_CONTROL_CHARACTERS = _entry(
    "url_control_characters", "URL 含有空白或控制字符", "the URL contains whitespace or control characters"
)
URL_UNPARSABLE = _entry("url_unparsable", "无法解析该 URL（{error}）", "the URL cannot be parsed ({error})")
URL_SCHEME = _entry("url_scheme", "只允许 http 和 https URL", "only http and https URLs are allowed")
URL_CREDENTIALS = _entry("url_credentials", "URL 中不允许带凭据", "credentials in the URL are not allowed")
URL_NO_HOST = _entry("url_no_host", "URL 没有主机名", "the URL has no host")
HOST_NOT_ALLOWED = _entry("host_not_allowed", "不允许主机 {host}", "the host {host} is not allowed")
HOST_LOOPBACK_NAME = _entry("host_loopback_name", "主机 {host} 是回环名称", "the host {host} is a loopback name")
HOST_UNRESOLVED = _entry("host_unresolved", "无法解析主机 {host}", "the host {host} cannot be resolved")
HOST_RESOLVES_TO = _entry("host_resolves_to", "主机 {host} 解析为{reason}", "the host {host} resolves to {reason}")
HOST_RESOLVE_TIMEOUT = _entry(
    "host_resolve_timeout", "{seconds} 秒内未能解析主机", "the host cannot be resolved within {seconds} s"
)
ADDRESS_TRANSLATION = _entry(
    "address_translation",
    "非全局可路由的 IPv6 转换地址",
    "an IPv6 translation address that is not globally routable",
)
ADDRESS_METADATA = _entry("address_metadata", "云元数据地址", "a cloud metadata address")
ADDRESS_UNSPECIFIED = _entry("address_unspecified", "未指定地址", "an unspecified address")
ADDRESS_MULTICAST = _entry("address_multicast", "组播地址", "a multicast address")
ADDRESS_LOOPBACK = _entry("address_loopback", "回环地址", "a loopback address")
ADDRESS_LINK_LOCAL = _entry("address_link_local", "链路本地地址", "a link-local address")
ADDRESS_PRIVATE = _entry("address_private", "私有地址", "a private address")
ADDRESS_RESERVED = _entry("address_reserved", "保留地址或非公网地址", "a reserved or non-public address")

# Request validation, by the kind of problem FastAPI's validation found (serving.errors): whole
# sentences with the constraint's values, and a generic one for any kind not named here.
PARAM_AT_LEAST = _entry(
    "param_at_least",
    "参数 {field} 必须大于或等于 {limit}",
    "Parameter {field} must be greater than or equal to {limit}",
)
PARAM_ABOVE = _entry("param_above", "参数 {field} 必须大于 {limit}", "Parameter {field} must be greater than {limit}")
PARAM_AT_MOST = _entry(
    "param_at_most", "参数 {field} 必须小于或等于 {limit}", "Parameter {field} must be less than or equal to {limit}"
)
PARAM_BELOW = _entry("param_below", "参数 {field} 必须小于 {limit}", "Parameter {field} must be less than {limit}")
PARAM_NOT_INTEGER = _entry("param_not_integer", "参数 {field} 必须是整数", "Parameter {field} must be a whole number")
PARAM_NOT_NUMBER = _entry("param_not_number", "参数 {field} 必须是数字", "Parameter {field} must be a number")
PARAM_NOT_BOOLEAN = _entry(
    "param_not_boolean", "参数 {field} 必须是 true 或 false", "Parameter {field} must be true or false"
)
PARAM_NOT_STRING = _entry("param_not_string", "参数 {field} 必须是字符串", "Parameter {field} must be a string")
PARAM_NOT_LIST = _entry("param_not_list", "参数 {field} 必须是列表", "Parameter {field} must be a list")
PARAM_NOT_OBJECT = _entry(
    "param_not_object", "参数 {field} 必须是 JSON 对象", "Parameter {field} must be a JSON object"
)
PARAM_TOO_LONG = _entry(
    "param_too_long", "参数 {field} 最多 {limit} 个字符", "Parameter {field} may have at most {limit} characters"
)
PARAM_TOO_SHORT = _entry(
    "param_too_short", "参数 {field} 至少需要 {limit} 个字符", "Parameter {field} needs at least {limit} characters"
)
PARAM_TOO_MANY_ITEMS = _entry(
    "param_too_many_items", "参数 {field} 最多 {limit} 项", "Parameter {field} takes at most {limit} items"
)
PARAM_TOO_FEW_ITEMS = _entry(
    "param_too_few_items", "参数 {field} 至少需要 {limit} 项", "Parameter {field} needs at least {limit} items"
)
PARAM_PATTERN = _entry(
    "param_pattern", "参数 {field} 的格式不符合 {pattern}", "Parameter {field} does not match the pattern {pattern}"
)
PARAM_ONE_OF = _entry(
    "param_one_of", "参数 {field} 必须是以下之一：{choices}", "Parameter {field} must be one of: {choices}"
)
PARAM_UNKNOWN = _entry("param_unknown", "不支持的参数 {field}", "Unknown parameter {field}")
PARAM_VALUE_INVALID = _entry("param_value_invalid", "参数 {field} 的值无效", "Parameter {field} has an invalid value")

# LoRA adapters: the ``loras`` option of the generation routes (reasons for PARAM_INVALID)
ADAPTER_UNKNOWN = _entry(
    "adapter_unknown", "未知的 LoRA {name}（见 GET /loras）", "unknown LoRA {name} (see GET /loras)"
)
ADAPTER_OTHER_MODEL = _entry(
    "adapter_other_model", "LoRA {name} 适用于 {model}，不能用于 {kind}", "LoRA {name} is for {model}, not for {kind}"
)
ADAPTER_OTHER_BASE = _entry(
    "adapter_other_base",
    "LoRA {name} 为 {base} 训练，本服务运行 {service_base}（{profile} 配置），无法加载",
    "LoRA {name} was trained for {base}; this service runs {service_base} (the {profile} profile) and cannot load it",
)
ADAPTER_BASE_MISMATCH = _entry(
    "adapter_base_mismatch",
    "本服务运行 {service_base}（{profile} 配置），只能登记适用于它的 LoRA，收到 base={base}",
    "This service runs {service_base} (the {profile} profile) and registers LoRAs for it only, got base={base}",
)
ADAPTERS_OVER_CACHE_COUNT = _entry(
    "adapters_over_cache_count",
    "需要同时加载 {count} 个 LoRA，但每个副本最多保留 {limit} 个（ADAPTER_CACHE_SIZE）",
    "{count} LoRAs would have to be loaded at once, but each replica keeps at most {limit} (ADAPTER_CACHE_SIZE)",
)
ADAPTERS_OVER_CACHE_MB = _entry(
    "adapters_over_cache_mb",
    "这些 LoRA 共 {size_mb} MB，超过每个副本的 LoRA 缓存 {limit_mb} MB（ADAPTER_CACHE_MB）",
    "these LoRAs take {size_mb} MB together, more than each replica's LoRA cache of {limit_mb} MB (ADAPTER_CACHE_MB)",
)
# … the problems models.adapters finds (AdapterError.code is the id, AdapterError.params the parameters)
ADAPTER_NAME_MISSING = _entry("adapter_name_missing", "{part} 缺少 LoRA 名称", "a LoRA name is missing in {part}")
ADAPTER_SCALE_NOT_NUMBER = _entry(
    "adapter_scale_not_number",
    "LoRA {name} 的权重 {scale} 不是数字",
    "the scale {scale} of LoRA {name} is not a number",
)
ADAPTER_SCALE_OUT_OF_RANGE = _entry(
    "adapter_scale_out_of_range",
    "LoRA {name} 的权重必须在 {low} 到 {high} 之间，收到 {scale}",
    "the scale of LoRA {name} must be between {low} and {high}, got {scale}",
)
ADAPTER_NAMED_TWICE = _entry("adapter_named_twice", "LoRA {name} 出现了两次", "LoRA {name} is named twice")
ADAPTERS_TOO_MANY = _entry(
    "adapters_too_many",
    "每个请求最多 {limit} 个 LoRA，收到 {count} 个",
    "at most {limit} LoRAs per request, got {count}",
)
LORA_FILE_UNREADABLE = _entry(
    "lora_file_unreadable", "不是有效的 .safetensors 文件（{error}）", "it is not a valid .safetensors file ({error})"
)
LORA_FILE_NO_TENSORS = _entry("lora_file_no_tensors", "文件中没有任何张量", "the file holds no tensors")
LORA_FILE_NO_LORA_WEIGHTS = _entry(
    "lora_file_no_lora_weights",
    "文件中没有 LoRA 权重（没有 lora_A/lora_B 或 lora_down/lora_up 张量）",
    "the file holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up tensors)",
)
LORA_RANK_TOO_HIGH = _entry(
    "lora_rank_too_high",
    "其秩 {rank} 高于编译后的副本可接受的最高秩 {max_rank}（MAX_ADAPTER_RANK）",
    "its rank {rank} is higher than {max_rank}, the highest the compiled replicas take (MAX_ADAPTER_RANK)",
)
ADAPTER_INVALID = _entry("adapter_invalid", "LoRA 无法使用", "the LoRA cannot be used")

# LoRA adapters: the admin routes (/admin/loras)
ONE_OF = _entry("one_of", "可选：{choices}", "choose one of: {choices}")
ADAPTER_NAME_RESERVED = _entry(
    "adapter_name_reserved",
    "{name} 是保留名称（speed=fast 使用的 Lightning LoRA）",
    "{name} is reserved (the Lightning LoRA of speed=fast)",
)
SOURCE_OR_FILE = _entry("source_or_file", "需要且只能提供 source 或 file 之一", "Give exactly one of source and file")
ADAPTER_EXISTS = _entry("adapter_exists", "LoRA {name} 已存在", "LoRA {name} already exists")
ADAPTER_NOT_FOUND = _entry("adapter_not_found", "LoRA {name} 不存在", "LoRA {name} not found")
HUB_SOURCE_MALFORMED = _entry(
    "hub_source_malformed", "hub: 之后应为 <owner>/<repo>", "hub: must be followed by <owner>/<repo>"
)
HUB_WEIGHT_NAME_REQUIRED = _entry(
    "hub_weight_name_required",
    "hub 来源需要仓库中的 .safetensors 文件名",
    "a hub source needs the name of a .safetensors file in the repository",
)
SOURCE_PREFIX = _entry("source_prefix", "应以 hub: 或 local: 开头", "it must start with hub: or local:")
LOCAL_PATH_UNRESOLVABLE = _entry("local_path_unresolvable", "local: 路径无法解析", "the local: path cannot be resolved")
LOCAL_PATH_OUTSIDE = _entry(
    "local_path_outside", "local: 路径必须位于 LORA_DIR 之内", "a local: path must lie inside LORA_DIR"
)
LOCAL_FILE_MISSING = _entry("local_file_missing", "LORA_DIR 中没有文件 {path}", "there is no file {path} in LORA_DIR")
LORA_FILE_INVALID = _entry(
    "lora_file_invalid", "LoRA 文件 {name} 无效：{reason}", "LoRA file {name} is invalid: {reason}"
)
LORA_FILE_NOT_SAFETENSORS = _entry(
    "lora_file_not_safetensors", "LoRA 文件必须是 .safetensors 格式", "A LoRA file must be a .safetensors file"
)
LORA_FILE_OVER_CACHE = _entry(
    "lora_file_over_cache",
    "LoRA 文件 {size_mb} MB，超过每个副本的 LoRA 缓存 {limit_mb} MB（ADAPTER_CACHE_MB）",
    "The LoRA file takes {size_mb} MB, more than each replica's LoRA cache of {limit_mb} MB (ADAPTER_CACHE_MB)",
)
LORA_UPLOAD_TOO_LARGE = _entry(
    "lora_upload_too_large",
    "上传内容过大：LoRA 文件最大 {limit_mb} MB",
    "Upload too large: a LoRA file may have at most {limit_mb} MB",
)

LOGGED_OUT = _entry("logged_out", "已退出登录", "You are logged out")
API_KEY_NOT_ALLOWED = _entry(
    "api_key_not_allowed",
    "API 密钥不能执行此操作（创建密钥、修改密码、轮换 webhook 密钥、管理会话），请登录后再试",
    "An API key cannot do this (create keys, change the password, rotate the webhook secret, manage"
    " sessions); log in instead",
)
CURRENT_PASSWORD_REQUIRED = _entry(
    "current_password_required", "修改密码需要提供当前密码", "Changing the password needs the current password"
)

# For recognise(): fixed texts by their Chinese, then templates, the most literal text first (so
# "任务执行失败: …" is read as a task failure before "{first}；{rest}" could split it).
_BY_TEXT = {template.texts["zh"]: template() for template in CATALOGUE.values() if not template.fields}
_TEMPLATES = sorted(
    (template for template in CATALOGUE.values() if template.fields),
    key=lambda template: -len(re.sub(r"\{\w+\}", "", template.texts["zh"])),
)

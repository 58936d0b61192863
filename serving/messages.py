"""Client-facing messages (the service's users read Chinese; see the API contract)."""

from models.kinds import ModelKind

TASK_ACCEPTED = "任务已提交"
TASK_NOT_FOUND = "任务不存在"
# Each model kind's "not loaded" message lives in its row of the kind table (models.kinds).
REGISTRY_UNAVAILABLE = "任务服务正在重启，请稍后重试"
QUEUE_FULL = "任务队列已满，请稍后重试"
WAIT_TIMEOUT = "等待任务结果超时"
TASK_CANCELLED = "任务已取消"
TASK_FAILED = "任务执行失败"
TASK_ALREADY_FINISHED = "任务已结束，无法取消"
RESULT_MISSING = "任务结果文件不存在"
INTERNAL_ERROR = "服务器内部错误"
REPLICA_CRASHED = "模型副本在执行任务时崩溃（已重试）"
INTERRUPTED_BY_RESTART = "服务重启时任务正在执行，已达到重试次数上限"
RESULT_WRITE_FAILED = "结果写入失败"
QUOTA_DAILY = "已达到每日配额上限（{limit}），将于 {resets_at} 重置"
QUOTA_MONTHLY = "已达到每月配额上限（{limit}），将于 {resets_at} 重置"

# English for clients sending ``Accept-Language: en`` (error details only; success bodies keep the
# contract's wording, which existing clients may compare against).
ENGLISH = {
    TASK_NOT_FOUND: "Task not found",
    **{kind.spec.not_loaded: kind.spec.not_loaded_en for kind in ModelKind},
    REGISTRY_UNAVAILABLE: "The task service is restarting; retry shortly",
    QUEUE_FULL: "The task queue is full; retry later",
    WAIT_TIMEOUT: "Timed out waiting for the task result",
    TASK_CANCELLED: "The task was cancelled",
    TASK_ALREADY_FINISHED: "The task has already finished and cannot be cancelled",
    RESULT_MISSING: "The task's result file is missing",
    INTERNAL_ERROR: "Internal server error",
    "无效的认证凭据": "Invalid authentication credentials",
    "需要管理员权限": "Administrator privileges required",
    "用户名已存在": "Username already exists",
    "当前不允许用户注册": "Registration is currently disabled",
    "用户名或密码错误": "Incorrect username or password",
    "用户已被禁用": "This user is disabled",
    "登录失败次数过多，请稍后再试": "Too many failed logins; try again later",
    "原密码错误": "The old password is incorrect",
    "用户不存在": "User not found",
    "不能对自己的账号执行此操作": "Administrators cannot do this to their own account",
    "服务正在启动": "The service is starting",
    "请求体无法解析": "The request body could not be parsed",
    "浏览器会话的修改请求需要请求头 X-Requested-With: qwen-image":
        "Requests that change state with a browser session need the header X-Requested-With: qwen-image",
}
# Templated messages: the Chinese prefix is replaced, the rest (names, numbers) kept.
ENGLISH_PREFIXES = [
    (TASK_FAILED + ": ", "Task failed: "),
    ("缺少必填参数 ", "Missing required parameter "),
    ("参数 ", "Parameter "),
    ("图片 ", "Image "),
    ("上传内容过大", "Upload too large"),
    ("已达到每日配额上限", "Daily quota reached"),
    ("已达到每月配额上限", "Monthly quota reached"),
    ("不支持的宽高比 ", "Unsupported aspect ratio "),
    ("最多上传 ", "Too many images: at most "),
    ("至少需要上传 1 张图片", "At least one image is required"),
]


# Fragments inside templated messages, replaced after the prefix.
ENGLISH_FRAGMENTS = [
    (" 无效：", ": "), ("无效：", ""), (" 不能为空", " must not be empty"), ("，可选：", "; choose one of: "),
    ("无法解析为图片", "cannot be decoded as an image"), ("文件为空", "the file is empty"),
    ("不支持的格式 ", "unsupported format "), ("，仅支持 JPEG、PNG、WebP", ", only JPEG, PNG and WebP"),
    ("超过上限", "exceeds the limit of"), (" 像素", " pixels"), ("过小（每边至少", "is too small (at least"),
    ("像素）", "pixels per side)"), ("疑似解压炸弹（像素数过大）", "looks like a decompression bomb (too many pixels)"),
    ("图片结尾之后还有多余数据（疑似伪装的复合文件）", "has data after the image's end (a polyglot file?)"),
    ("：每个文件最大 ", ": at most "), (" MB", " MB per file"), ("最多 ", "at most "), (" 条，收到 ", ", got "),
    (" 条", ""), (" 张图片", " images"), ("每条最多 ", "at most "), (" 个字符", " characters each"),
    ("（", " ("), ("）", ")"), ("，将于 ", "; resets at "), (" 重置", ""), ("；", "; "), ("：", ": "),
]


def to_english(detail: object) -> object:
    if not isinstance(detail, str):
        return detail
    if detail in ENGLISH:
        return ENGLISH[detail]
    for chinese, english in ENGLISH_PREFIXES:
        if detail.startswith(chinese):
            detail = english + detail[len(chinese):]
            for fragment, replacement in ENGLISH_FRAGMENTS:
                detail = detail.replace(fragment, replacement)
            return detail
    return detail

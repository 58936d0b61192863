"""Error responses: JSON ``{"detail": ...}`` always, 400 (not 422) for bad input, no stack traces."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import messages

log = logging.getLogger("qwen_image.ingress")


def describe_validation_error(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = ".".join(loc)
        if not field or field == "request":
            parts.append("请求体格式错误：此接口需要 JSON 对象" if error.get("type") in ("dict_type", "model_attributes_type")
                         else f"请求体无效：{error.get('msg', '')}")
        elif error.get("type") == "missing":
            parts.append(f"缺少必填参数 {field}")
        else:
            parts.append(f"参数 {field} 无效：{error.get('msg', '')}")
    return "；".join(parts) or "请求参数无效"


def _localized(request: Request, detail: object) -> object:
    """Chinese by default (the contract's wording); English for ``Accept-Language: en``."""
    language = request.headers.get("accept-language", "").strip().lower()
    return messages.to_english(detail) if language.startswith("en") else detail


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _localized(request, describe_validation_error(exc))},
                            status_code=status.HTTP_400_BAD_REQUEST)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == status.HTTP_400_BAD_REQUEST and detail == "There was an error parsing the body":
            detail = "请求体无法解析"
        return JSONResponse({"detail": _localized(request, detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": _localized(request, messages.INTERNAL_ERROR)},
                            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)

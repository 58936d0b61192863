"""Error responses: JSON ``{"detail": ...}`` always, 400 (not 422) for bad input, no stack traces.

Under ``/v1`` (the OpenAI-compatible API) the same errors take OpenAI's body instead,
``{"error": {"message", "type", "param", "code"}}``, in English unless ``Accept-Language`` asks for
Chinese, with ``x-should-retry: false`` wherever an SDK's automatic retry cannot help.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import messages
from serving.openai.protocol import error_body, retry_header

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


def is_openai_path(path: str, root_path: str = "") -> bool:
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    return path == "/v1" or path.startswith("/v1/")


def _openai_request(request: Request) -> bool:
    return is_openai_path(request.url.path, request.scope.get("root_path", ""))


def _openai_text(request: Request, message: object) -> str:
    """English by default on /v1 (what OpenAI clients and tools show), Chinese on request."""
    language = request.headers.get("accept-language", "").strip().lower()
    return str(message if language.startswith("zh") else messages.to_english(message))


def openai_response(request: Request, status_code: int, message: object, *, param=None, code=None,
                    error_type=None, headers=None) -> JSONResponse:
    merged = {**(headers or {}), **retry_header(status_code)}
    return JSONResponse(error_body(status_code, _openai_text(request, message), param, code, error_type),
                        status_code=status_code, headers=merged)


def _validation_param(exc: RequestValidationError) -> str | None:
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return None  # the loc of a JSON syntax error is a character position, not a field
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        if loc:
            return loc[0]
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if _openai_request(request):
            param = _validation_param(exc)
            first = exc.errors()[0] if exc.errors() else {}
            missing = first.get("type") == "missing"
            message = (f"Missing required parameter: '{param}'" if missing and param
                       else f"Invalid value for '{param}': {first.get('msg', '')}" if param
                       else f"The request body must be a JSON object ({first.get('msg', 'invalid')})")
            return openai_response(request, status.HTTP_400_BAD_REQUEST, message, param=param,
                                   code="missing_required_parameter" if missing else "invalid_value")
        return JSONResponse({"detail": _localized(request, describe_validation_error(exc))},
                            status_code=status.HTTP_400_BAD_REQUEST)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == status.HTTP_400_BAD_REQUEST and detail == "There was an error parsing the body":
            detail = "请求体无法解析"
        if _openai_request(request):
            return openai_response(request, exc.status_code, detail, param=getattr(exc, "param", None),
                                   code=getattr(exc, "code", None), error_type=getattr(exc, "error_type", None),
                                   headers=getattr(exc, "headers", None))
        return JSONResponse({"detail": _localized(request, detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if _openai_request(request):
            return openai_response(request, status.HTTP_500_INTERNAL_SERVER_ERROR, messages.INTERNAL_ERROR)
        return JSONResponse({"detail": _localized(request, messages.INTERNAL_ERROR)},
                            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)

"""Error responses: JSON ``{"detail": ...}`` always, 400 (not 422) for bad input, no stack traces.

Under ``/v1`` (the OpenAI-compatible API) the same errors take OpenAI's body instead,
``{"error": {"message", "type", "param", "code"}}``, in English unless ``Accept-Language`` asks for
Chinese, with ``x-should-retry: false`` wherever an SDK's automatic retry cannot help.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Optional

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from i18n import messages
from storage.db import DatabaseBusy

log = logging.getLogger("qwen_image.ingress")

# OpenAI's error body: the type and code each status gets unless a route names its own.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "insufficient_quota",
    503: "server_error",
}
ERROR_CODES = {
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    429: "insufficient_quota",
    500: "server_error",
    503: "service_unavailable",
}
# Statuses the SDKs retry by default where a retry is safe: nothing was created (queue full, model
# or registry not ready). Every other /v1 error says ``x-should-retry: false``: a retry either
# cannot help (bad input, quota spent) or could start a second generation (failed, timed out).
RETRYABLE = {502, 503, 504}


def error_body(
    status_code: int,
    message: str,
    param: Optional[str] = None,
    code: Optional[str] = None,
    error_type: Optional[str] = None,
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": error_type or ERROR_TYPES.get(status_code, "server_error"),
            "param": param,
            "code": code or ERROR_CODES.get(status_code),
        }
    }


def retry_header(status_code: int) -> dict[str, str]:
    return {} if status_code in RETRYABLE else {"x-should-retry": "false"}


# What a 503 for a busy or unreachable database tells the client to wait before trying again.
DATABASE_RETRY_AFTER_S = 2


# Pydantic's error types, by the catalogue sentence that says them (the constraint's value from the
# error's context fills ``limit``); a type not named here gets PARAM_VALUE_INVALID.
_BOUND_ERRORS = {
    "greater_than_equal": (messages.PARAM_AT_LEAST, "ge"),
    "greater_than": (messages.PARAM_ABOVE, "gt"),
    "less_than_equal": (messages.PARAM_AT_MOST, "le"),
    "less_than": (messages.PARAM_BELOW, "lt"),
    "string_too_long": (messages.PARAM_TOO_LONG, "max_length"),
    "string_too_short": (messages.PARAM_TOO_SHORT, "min_length"),
    "too_long": (messages.PARAM_TOO_MANY_ITEMS, "max_length"),
    "too_short": (messages.PARAM_TOO_FEW_ITEMS, "min_length"),
}
_TYPE_ERRORS = {
    "int_parsing": messages.PARAM_NOT_INTEGER,
    "int_type": messages.PARAM_NOT_INTEGER,
    "int_from_float": messages.PARAM_NOT_INTEGER,
    "float_parsing": messages.PARAM_NOT_NUMBER,
    "float_type": messages.PARAM_NOT_NUMBER,
    "finite_number": messages.PARAM_NOT_NUMBER,
    "decimal_parsing": messages.PARAM_NOT_NUMBER,
    "bool_parsing": messages.PARAM_NOT_BOOLEAN,
    "bool_type": messages.PARAM_NOT_BOOLEAN,
    "string_type": messages.PARAM_NOT_STRING,
    "list_type": messages.PARAM_NOT_LIST,
    "dict_type": messages.PARAM_NOT_OBJECT,
    "model_type": messages.PARAM_NOT_OBJECT,
    "model_attributes_type": messages.PARAM_NOT_OBJECT,
    "missing": messages.PARAM_MISSING,
    "extra_forbidden": messages.PARAM_UNKNOWN,
}


def _choices(expected: object) -> str:
    """Pydantic's ``'a' or 'b'`` (a literal's or an enum's choices) as ``a, b``, in no language."""
    text = str(expected)
    quoted = re.findall(r"'((?:[^'\\]|\\.)*)'", text)
    return ", ".join(quoted) if quoted else text


def describe_field_error(field: str, error: Mapping[str, Any]) -> messages.Message:
    """One validation error of ``field`` as a whole catalogue sentence (both languages)."""
    kind, context = error.get("type", ""), error.get("ctx") or {}
    if kind in _BOUND_ERRORS:
        template, key = _BOUND_ERRORS[kind]
        if key in context:
            return template(field=field, limit=context[key])
    if kind in _TYPE_ERRORS:
        return _TYPE_ERRORS[kind](field=field)
    if kind in ("literal_error", "enum") and "expected" in context:
        return messages.PARAM_ONE_OF(field=field, choices=_choices(context["expected"]))
    if kind == "string_pattern_mismatch" and "pattern" in context:
        return messages.PARAM_PATTERN(field=field, pattern=context["pattern"])
    if kind in ("value_error", "assertion_error"):
        # A validator of ours that raised a catalogue message says the reason itself.
        reason = getattr(context.get("error"), "args", (None,))[0]
        if isinstance(reason, messages.Message):
            return messages.PARAM_INVALID(field=field, reason=reason)
    return messages.PARAM_VALUE_INVALID(field=field)


def describe_validation_error(exc: RequestValidationError) -> messages.Message:
    """Every problem FastAPI's validation found, as catalogue sentences (never pydantic's English)."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = ".".join(loc)
        kind = error.get("type")
        if kind == "json_invalid":
            parts.append(messages.BODY_UNPARSABLE)  # its loc is a character position, not a field
        elif not field or field == "request":
            parts.append(
                messages.BODY_NOT_OBJECT
                if kind in ("dict_type", "model_attributes_type", "model_type")
                else messages.BODY_INVALID
            )
        else:
            parts.append(describe_field_error(field, error))
    return messages.join(parts) if parts else messages.PARAMS_INVALID


def _localized(request: Request, detail: object) -> object:
    """Chinese by default (the contract's wording); English when ``Accept-Language`` prefers it."""
    return messages.render(detail, messages.language(request.headers.get("accept-language")))


def is_openai_path(path: str, root_path: str = "") -> bool:
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    return path == "/v1" or path.startswith("/v1/")


def _openai_request(request: Request) -> bool:
    return is_openai_path(request.url.path, request.scope.get("root_path", ""))


def _openai_text(request: Request, message: object) -> str:
    """English by default on /v1 (what OpenAI clients and tools show), Chinese when asked for."""
    header = request.headers.get("accept-language", "")
    chinese = "zh" in header.lower() and messages.language(header) == "zh"
    return str(messages.render(message, "zh" if chinese else "en"))


def openai_response(
    request: Request, status_code: int, message: object, *, param=None, code=None, error_type=None, headers=None
) -> JSONResponse:
    merged = {**(headers or {}), **retry_header(status_code)}
    return JSONResponse(
        error_body(status_code, _openai_text(request, message), param, code, error_type),
        status_code=status_code,
        headers=merged,
    )


def _validation_param(exc: RequestValidationError) -> str | None:
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return None  # the loc of a JSON syntax error is a character position, not a field
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        if loc:
            return loc[0]
    return None


def _openai_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    param = _validation_param(exc)
    first = exc.errors()[0] if exc.errors() else {}
    missing = first.get("type") == "missing"
    return openai_response(
        request,
        status.HTTP_400_BAD_REQUEST,
        describe_validation_error(exc),
        param=param,
        code="missing_required_parameter" if missing else "invalid_value",
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if _openai_request(request):
            return _openai_validation(request, exc)
        return JSONResponse(
            {"detail": _localized(request, describe_validation_error(exc))}, status_code=status.HTTP_400_BAD_REQUEST
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == status.HTTP_400_BAD_REQUEST and detail == "There was an error parsing the body":
            detail = messages.BODY_UNPARSABLE
        if _openai_request(request):
            return openai_response(
                request,
                exc.status_code,
                detail,
                param=getattr(exc, "param", None),
                code=getattr(exc, "code", None),
                error_type=getattr(exc, "error_type", None),
                headers=getattr(exc, "headers", None),
            )
        return JSONResponse(
            {"detail": _localized(request, detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(SQLAlchemyTimeoutError)
    @app.exception_handler(OperationalError)
    @app.exception_handler(DatabaseBusy)
    async def _database_busy(request: Request, exc: Exception) -> JSONResponse:
        # No free connection in the pool, or the database unreachable or locked: the request did
        # nothing it has not rolled back, so the client may simply try again.
        log.warning("database busy or unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
        if _openai_request(request):
            return openai_response(
                request, status.HTTP_503_SERVICE_UNAVAILABLE, messages.DATABASE_BUSY, headers=headers
            )
        return JSONResponse(
            {"detail": _localized(request, messages.DATABASE_BUSY)},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if _openai_request(request):
            return openai_response(request, status.HTTP_500_INTERNAL_SERVER_ERROR, messages.INTERNAL_ERROR)
        return JSONResponse(
            {"detail": _localized(request, messages.INTERNAL_ERROR)}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
        )

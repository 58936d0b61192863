"""Error responses: JSON ``{"detail": ...}`` always, 400 (not 422) for bad input, no stack traces."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import messages

log = logging.getLogger("qwen_image.ingress")


def describe_validation_error(exc: RequestValidationError) -> messages.Message:
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = ".".join(loc)
        if not field or field == "request":
            parts.append(messages.BODY_NOT_OBJECT if error.get("type") in ("dict_type", "model_attributes_type")
                         else messages.BODY_INVALID(reason=error.get("msg", "")))
        elif error.get("type") == "missing":
            parts.append(messages.PARAM_MISSING(field=field))
        else:
            parts.append(messages.PARAM_INVALID(field=field, reason=error.get("msg", "")))
    return messages.join(parts) if parts else messages.PARAMS_INVALID


def _localized(request: Request, detail: object) -> object:
    """Chinese by default (the contract's wording); English when ``Accept-Language`` prefers it."""
    return messages.render(detail, messages.language(request.headers.get("accept-language")))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _localized(request, describe_validation_error(exc))},
                            status_code=status.HTTP_400_BAD_REQUEST)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == status.HTTP_400_BAD_REQUEST and detail == "There was an error parsing the body":
            detail = messages.BODY_UNPARSABLE
        return JSONResponse({"detail": _localized(request, detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": _localized(request, messages.INTERNAL_ERROR)},
                            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)

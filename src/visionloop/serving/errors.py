"""HTTP errors as one exception type carrying status, code and message.

Every layer of the server raises :class:`ApiError`; :func:`install_handlers` turns it (and
domain, validation and routing errors) into ``{"error": {"code", "message"}}`` with the right
status (and headers such as Retry-After).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import NotFoundError, ValidationError, VisionloopError

log = logging.getLogger("visionloop.serving")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_image(message: str) -> ApiError:
    return ApiError(400, "bad_image", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


def overloaded(message: str, retry_after: int = 1) -> ApiError:
    return ApiError(503, "overloaded", message, {"Retry-After": str(retry_after)})


def not_ready(message: str, retry_after: int = 2) -> ApiError:
    return ApiError(503, "not_ready", message, {"Retry-After": str(retry_after)})


def from_visionloop(exc: VisionloopError) -> ApiError:
    """Map a domain error to HTTP: not found → 404, bad input → 400, other → 409."""
    if isinstance(exc, NotFoundError):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, ValidationError):
        return ApiError(400, "bad_request", str(exc))
    return ApiError(409, "conflict", str(exc))


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path"))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


async def _on_error(request: Request, exc: Exception) -> JSONResponse:
    """Every error leaves as ``{"error": {"code", "message"}}``; only real bugs are a 500."""
    if isinstance(exc, VisionloopError):
        exc = from_visionloop(exc)
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    if isinstance(exc, RequestValidationError):
        return error_response(422, "bad_parameter", _validation_message(exc))
    if isinstance(exc, StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal server error (logged)")


def install_handlers(app: FastAPI) -> None:
    for kind in (ApiError, VisionloopError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, _on_error)

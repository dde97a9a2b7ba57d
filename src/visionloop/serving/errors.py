"""HTTP errors as one exception type carrying status, code and message.

Every layer of the server raises :class:`ApiError`; ``app.py`` turns it into
``{"error": {"code", "message"}}`` with the right status (and headers such as Retry-After).
"""

from __future__ import annotations

from ..errors import NotFoundError, ValidationError, VisionloopError


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

"""Request body → image bytes: size limits, multipart / JSON base64 / raw image, clear 4xx errors.

The body size is checked twice: ``Content-Length`` before reading anything, then the bytes
actually received (a lying or chunked client cannot get past the limit).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.requests import Request

from .errors import ApiError, too_large

_DRAIN_LIMIT = 256 * 1024 * 1024  # read and discard up to this much so the client sees the 413


@dataclass(frozen=True)
class ImageInput:
    filename: str
    data: bytes


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "invalid Content-Length header") from None
        if size > limit:
            await _drain(request, size)
            raise too_large(f"request body of {size} bytes exceeds the limit of {limit} bytes")
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            await _drain(request, received)
            raise too_large(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # Starlette's form parser reads the cached body instead of the spent stream
    return body


async def _drain(request: Request, seen: int) -> None:
    """Consume the rest of an oversized upload (bounded) so the client can read our 413."""
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > _DRAIN_LIMIT:
                return
    except Exception:  # client gone, stream already consumed: nothing to drain
        return


def bearer_matches(request: Request, token: str) -> bool:
    """``Authorization: Bearer TOKEN`` equals ``token`` (compared in constant time)."""
    given = request.headers.get("authorization", "")
    return given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode())


def decode_base64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ApiError(422, "bad_parameter", "'image' must be a base64 string")
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "'image' is not valid base64") from None
    if not data:
        raise ApiError(400, "empty_body", "'image' is empty")
    return data


def parse_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "request body is not valid JSON") from None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_images(request: Request, limit: int, many: bool = False) -> list[ImageInput]:
    """The image(s) of a predict request: multipart ``file`` field(s), JSON ``image``/``images``, or a raw image body."""
    body = await read_body(request, limit)
    if not body:
        raise ApiError(400, "empty_body", "request body is empty: send an image")
    kind = _media_type(request)
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=256, max_fields=64)
        except Exception as exc:  # Starlette raises several types for malformed multipart bodies
            raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from None
        files = [f for key in ("file", "files") for f in form.getlist(key)]
        uploads = [f for f in files if isinstance(f, UploadFile)]
        if not uploads:
            raise ApiError(422, "bad_parameter", "multipart body needs a 'file' field holding an image")
        if not many:
            uploads = uploads[:1]
        out = [ImageInput(u.filename or f"file{i}", await u.read()) for i, u in enumerate(uploads)]
        await form.close()
        return out
    if kind == "application/json":
        doc = parse_json(body)
        if not isinstance(doc, dict) or not ("image" in doc or (many and "images" in doc)):
            raise ApiError(422, "bad_parameter", 'JSON body must be {"image": "<base64>"}')
        values = doc.get("images") if many and "images" in doc else [doc["image"]]
        if not isinstance(values, list) or not values:
            raise ApiError(422, "bad_parameter", "'images' must be a non-empty list of base64 strings")
        return [ImageInput(f"image{i}", decode_base64(v)) for i, v in enumerate(values)]
    if kind.startswith("image/") or kind == "application/octet-stream":
        return [ImageInput("body", body)]
    raise ApiError(415, "unsupported_media_type",
                   f"unsupported Content-Type {kind or '(none)'}: use multipart/form-data, application/json or image/*")

"""Routes that run no model: health, readiness, metrics, the model list and the admin reload."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .errors import ApiError, not_ready
from .inputs import parse_json, read_body
from .pipeline import ServerState, state_of
from .schemas import REF, ErrorResponse, HealthResponse, ModelsResponse, ReadyResponse, ReloadRequest, ReloadResponse

router = APIRouter()
_RELOAD_ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422, 503)}
_RELOAD_BODY = {"requestBody": {"required": False, "content": {
    "application/json": {"schema": ReloadRequest.model_json_schema(ref_template=REF)}}}}


@router.get("/health", response_model=HealthResponse, tags=["ops"])
async def health():
    """Liveness: the process answers (models may still be loading)."""
    return HealthResponse()


@router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ErrorResponse}}, tags=["ops"])
async def ready(st: ServerState = Depends(state_of)):
    """200 once every model is loaded and warmed up; 503 with Retry-After before."""
    states = {n: s.state for n, s in st.manager.slots.items()}
    if not st.manager.ready:
        waiting = ", ".join(f"{n} ({s})" for n, s in states.items() if s != "ready")
        raise not_ready(f"not ready: {waiting}")
    return ReadyResponse(ready=True, models=states)


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(st: ServerState = Depends(state_of)):
    """Prometheus text format."""
    return Response(st.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/models", response_model=ModelsResponse, tags=["models"])
async def models(st: ServerState = Depends(state_of)):
    """Every model: version serving, alias, task, classes, input size, load state, last error."""
    return ModelsResponse(default=st.manager.default, models=st.manager.status())


def _check_admin(request: Request, token: str) -> None:
    if not token:
        raise ApiError(403, "admin_disabled", "reload is disabled: set VISIONLOOP_ADMIN_TOKEN on the server")
    given = request.headers.get("authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong admin token (Authorization: Bearer ...)")


@router.post("/v1/models/{name}/reload", response_model=ReloadResponse, tags=["models"], responses=_RELOAD_ERRORS,
             openapi_extra=_RELOAD_BODY)
async def reload(name: str, request: Request, st: ServerState = Depends(state_of)):
    """Admin (Bearer token): load a version or a file and swap it in once warmed up.

    - `{"version": "5"}` or `{"path": "/srv/m.onnx"}`: load it and **pin** the model to it; a
      `--watch` server leaves a pinned model alone when the alias moves (`pinned` in /v1/models).
    - `{"unpin": true}`: release the pin and load what the alias names now; the watcher follows
      the alias again.
    - no body: re-resolve the source (a pinned model: what it is pinned to).

    A failed load keeps the old version serving: 409 (the version cannot be loaded), 404 (no
    such version), 503 (the registry does not answer); the error is in /v1/models `last_error`.
    """
    _check_admin(request, st.admin_token)
    body = await read_body(request, 64 * 1024)
    req = ReloadRequest()
    if body.strip():
        try:
            req = ReloadRequest.model_validate(parse_json(body))
        except ValueError as exc:
            raise ApiError(422, "bad_parameter", str(exc).splitlines()[0]) from None
    return await run_in_threadpool(st.manager.reload, name, req.version, req.path, req.unpin)

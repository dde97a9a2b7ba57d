"""Routes that run models: predict, annotated, batch, ``:predict`` (KServe v1), compare, ``/detect``, feedback.

Each is read body → :mod:`.pipeline` (decode → run_model on the pool, encode + observe here).
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from .capture import CaptureJob
from .errors import ApiError
from .inputs import bearer_matches, decode_base64, parse_json, read_body, read_images
from .manager import LoadedModel
from .pipeline import ServerState, count, decode, encode, infer, infer_all, infer_each, observe, state_of
from .runtime import PredictParams
from .schemas import (
    BatchItem, BatchResponse, CompareItem, CompareResponse, Detection, ErrorBody, ErrorResponse, FeedbackRequest,
    FeedbackResponse, ImageSize, InstancesRequest, InstancesResponse, Prediction, REF,
)

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)}
_FEEDBACK_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 429, 503)}
_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
    "application/json": {"schema": {"type": "object", "required": ["image"],
                                    "properties": {"image": {"type": "string", "description": "base64 image"}}}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
}}}
_BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": {"type": "string"}}}}},
}}}
_INSTANCES_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": InstancesRequest.model_json_schema(ref_template=REF)}}}}
_FEEDBACK_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": FeedbackRequest.model_json_schema(ref_template=REF)}}}}

router = APIRouter()


async def _params(conf: float = Query(0.25, ge=0, le=1, description="Minimum confidence."),
                  iou: float = Query(0.7, ge=0, le=1, description="NMS IoU threshold."),
                  max_det: int = Query(300, ge=1, le=10000, description="Maximum detections."),
                  top_k: int = Query(5, ge=1, le=1000, description="Classification: classes returned.")) -> PredictParams:
    return PredictParams(conf=conf, iou=iou, max_det=max_det, top_k=top_k)


def json_response(model) -> Response:
    return Response(model.model_dump_json(exclude_none=True), media_type="application/json")


async def _one(st: ServerState, endpoint: str, name: str | None, request: Request, params: PredictParams,
               draw: bool = False) -> Response:
    """One image through one model, counted under ``endpoint`` whatever the outcome."""
    started = time.perf_counter()
    model, version, status = name if name in st.manager.slots else "unknown", "none", 500
    try:
        loaded = st.manager.get(name)
        model, version = loaded.name, loaded.version
        image = (await read_images(request, st.config.max_body_bytes))[0]
        ran = await st.pool.run(infer, loaded, image.data, params, st.config.max_pixels, draw)
        pred = encode(loaded, ran.raw, ran.decode_ms, started)
        observe(st, loaded, ran.raw, pred, image.data, ran.brightness)
        status = 200
        if not draw:
            return json_response(pred)
        return Response(ran.jpeg, media_type="image/jpeg", headers={
            "X-Model": loaded.name, "X-Model-Version": loaded.version,
            "X-Detections": str(len(pred.detections or [])), "X-Inference-Ms": str(pred.timing_ms.inference)})
    except ApiError as exc:
        status = exc.status
        raise
    finally:
        count(st, model, version, endpoint, status)


@router.post("/v1/models/{name}/predict", response_model=Prediction, response_model_exclude_none=True,
             responses=_ERRORS, openapi_extra=_IMAGE_BODY, tags=["predict"])
async def predict(name: str, request: Request, params: PredictParams = Depends(_params),
                  st: ServerState = Depends(state_of)):
    """Detections (or top-k classes) for one image: multipart `file`, JSON `{"image": base64}` or a raw image body."""
    return await _one(st, "predict", name, request, params)


@router.post("/v1/models/{name}/predict/annotated", response_class=Response, responses={
    200: {"content": {"image/jpeg": {}}, "description": "The image with boxes, labels and confidences."}, **_ERRORS},
    openapi_extra=_IMAGE_BODY, tags=["predict"])
async def predict_annotated(name: str, request: Request, params: PredictParams = Depends(_params),
                            st: ServerState = Depends(state_of)):
    """The image as JPEG with the detections drawn; version in the `X-Model-Version` header."""
    return await _one(st, "annotated", name, request, params, draw=True)


@router.post("/detect", response_model=Prediction, response_model_exclude_none=True, responses=_ERRORS,
             openapi_extra=_IMAGE_BODY, tags=["predict"])
async def detect(request: Request, params: PredictParams = Depends(_params), st: ServerState = Depends(state_of)):
    """flyingthings-compatible: predict with the default model."""
    return await _one(st, "detect", None, request, params)


@router.post("/v1/models/{name}/predict/batch", response_model=BatchResponse, response_model_exclude_none=True,
             responses=_ERRORS, openapi_extra=_BATCH_BODY, tags=["predict"])
async def predict_batch(name: str, request: Request, params: PredictParams = Depends(_params),
                        st: ServerState = Depends(state_of)):
    """Several images (multipart `file` repeated, or JSON `{"images": [...]}`); a bad image fails only its item."""
    started = time.perf_counter()
    loaded = st.manager.get(name)
    inputs = await read_images(request, st.config.max_body_bytes, many=True)
    results = await st.pool.run(infer_each, loaded, [i.data for i in inputs], params, st.config.max_pixels)
    items = []
    for item, res in zip(inputs, results):
        if isinstance(res, ApiError):
            items.append(BatchItem(filename=item.filename, error=ErrorBody(code=res.code, message=res.message)))
            continue
        pred = encode(loaded, res.raw, res.decode_ms, started)
        observe(st, loaded, res.raw, pred, item.data, res.brightness)
        items.append(BatchItem(filename=item.filename, prediction=pred))
    count(st, loaded.name, loaded.version, "batch", 200)
    return json_response(BatchResponse(model=loaded.name, version=loaded.version, results=items))


def _compare_names(st: ServerState, wanted: str | None) -> list[str]:
    if not wanted:
        return list(st.manager.slots)
    names = list(dict.fromkeys(n.strip() for n in wanted.split(",") if n.strip()))
    unknown = [n for n in names if n not in st.manager.slots]
    if unknown or not names:
        raise ApiError(404, "not_found", f"no such model: {', '.join(unknown) or '(none named)'}; "
                       f"served: {', '.join(st.manager.slots)}")
    return names


@router.post("/v1/models/{name}:predict", response_model=InstancesResponse, response_model_exclude_none=True,
             responses=_ERRORS, openapi_extra=_INSTANCES_BODY, tags=["predict"])
async def predict_instances(name: str, request: Request, params: PredictParams = Depends(_params),
                            st: ServerState = Depends(state_of)):
    """KServe v1 / TF-Serving style: `{"instances": [{"b64": ...}, ...]}` → `{"predictions": [...]}`
    (Cloud ML's `{"image_bytes": {"b64": ...}}` too). One bad instance fails the request (400, naming it)."""
    started = time.perf_counter()
    loaded = st.manager.get(name)
    status = 500
    try:
        body = await read_body(request, st.config.max_body_bytes)
        try:
            req = InstancesRequest.model_validate(parse_json(body))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ApiError(422, "bad_parameter", 'expected {"instances": [{"b64": "<base64>"}, ...]}: '
                           + str(exc).splitlines()[0]) from None
        data = []
        for i, inst in enumerate(req.instances):
            b64 = inst.data()
            if b64 is None:
                raise ApiError(422, "bad_parameter", f'instances[{i}] has no "b64" (or "image_bytes": {{"b64"}})')
            try:
                data.append(decode_base64(b64))
            except ApiError as exc:
                raise ApiError(exc.status, exc.code, f"instances[{i}]: {exc.message}") from None
        results = await st.pool.run(infer_each, loaded, data, params, st.config.max_pixels)
        preds = []
        for i, (item, res) in enumerate(zip(data, results)):
            if isinstance(res, ApiError):
                raise ApiError(res.status, res.code, f"instances[{i}]: {res.message}")
            pred = encode(loaded, res.raw, res.decode_ms, started)
            observe(st, loaded, res.raw, pred, item, res.brightness)
            preds.append(pred)
        status = 200
        return json_response(InstancesResponse(predictions=preds))
    except ApiError as exc:
        status = exc.status
        raise
    finally:
        count(st, loaded.name, loaded.version, "instances", status)


@router.post("/v1/compare", response_model=CompareResponse, response_model_exclude_none=True,
             responses=_ERRORS, openapi_extra=_IMAGE_BODY, tags=["predict"])
async def compare(request: Request, params: PredictParams = Depends(_params), st: ServerState = Depends(state_of),
                  models_: str | None = Query(None, alias="models", description="Comma-separated model names "
                                              "(e.g. `custom,baseline`); every served model if omitted.")):
    """One image through several served models, side by side (e.g. custom vs. stock, or S beside M)."""
    started = time.perf_counter()
    names = _compare_names(st, models_)
    image = (await read_images(request, st.config.max_body_bytes))[0]
    models: dict[str, LoadedModel | ApiError] = {}
    for name in names:
        try:
            models[name] = st.manager.get(name)
        except ApiError as exc:
            models[name] = exc
    decoded, results = await st.pool.run(infer_all, models, image.data, params, st.config.max_pixels)
    items = []
    for name, res in results.items():
        loaded = models[name]  # a LoadedModel whenever res is a prediction
        if isinstance(res, ApiError):
            items.append(CompareItem(model=name, error=ErrorBody(code=res.code, message=res.message)))
            continue
        pred = encode(loaded, res, decoded.ms, started)
        observe(st, loaded, res, pred, image.data, decoded.brightness)
        count(st, name, loaded.version, "compare", 200)
        items.append(CompareItem(model=name, prediction=pred))
    return json_response(CompareResponse(image=ImageSize(width=decoded.image.width, height=decoded.image.height),
                                         results=items))


async def _feedback_request(request: Request, limit: int) -> FeedbackRequest:
    body = await read_body(request, limit)
    if not body:
        raise ApiError(400, "empty_body", "request body is empty")
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise ApiError(415, "unsupported_media_type", "send JSON: {\"image\": base64, \"model\", \"note\"}")
    try:
        return FeedbackRequest.model_validate(parse_json(body))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ApiError(422, "bad_parameter", str(exc).splitlines()[0]) from None


def _refuse(st: ServerState, why: str, exc: ApiError) -> ApiError:
    st.metrics.feedback_refused.labels(why).inc()
    return exc


def _admit(st: ServerState, request: Request) -> None:
    """Rate limit per client IP first (also throttles token guessing), then the token."""
    wait = st.feedback_limiter.check(request.client.host if request.client else "?") if st.feedback_limiter else 0
    if wait > 0:
        raise _refuse(st, "rate_limited", ApiError(429, "rate_limited", "too much feedback from this client; retry"
                      " later", {"Retry-After": st.feedback_limiter.retry_after(wait)}))
    if st.feedback_token and not bearer_matches(request, st.feedback_token):
        raise _refuse(st, "unauthorized", ApiError(401, "unauthorized", "missing or wrong feedback token "
                                                   "(Authorization: Bearer ...)"))


def _check_classes(st: ServerState, dets: list[Detection], classes: list[str]) -> None:
    bad = sorted({f"{d.class_id}:{d.class_name}" for d in dets
                  if not 0 <= d.class_id < len(classes) or classes[d.class_id] != d.class_name})
    if bad:
        raise _refuse(st, "bad_class", ApiError(422, "unknown_class", f"detections name classes the model does not "
                      f"have (id:name): {', '.join(bad[:10])}; the model's classes: {', '.join(classes)}"))


@router.post("/v1/feedback", response_model=FeedbackResponse, status_code=202, responses=_FEEDBACK_ERRORS,
             tags=["feedback"], openapi_extra=_FEEDBACK_BODY)
async def feedback(request: Request, st: ServerState = Depends(state_of)):
    """Flag a prediction as wrong: the image and its prediction go to the capture inbox (reason `flagged`).

    When the server has a feedback token (`VISIONLOOP_FEEDBACK_TOKEN` or `--feedback-token`), send it as
    `Authorization: Bearer TOKEN` (401 without it); unset, the endpoint is open. Each client IP gets
    `--feedback-rate` requests (429 + Retry-After beyond), bodies up to `--feedback-max-mb`, detections
    whose class ids and names are the model's (422 otherwise), and a flag counts against `--capture-max`
    (503 when the inbox is full and `--capture-full refuse`)."""
    _admit(st, request)
    fb = await _feedback_request(request, st.config.feedback_max_body_bytes)
    loaded = st.manager.get(fb.model)
    classes = list(loaded.model.info.classes)
    if fb.detections is not None:
        _check_classes(st, fb.detections, classes)
    if not st.captures.has_room(loaded.name):
        raise _refuse(st, "inbox_full", ApiError(503, "inbox_full", "the capture inbox is full (--capture-max); "
                      "label or discard captures, then retry", {"Retry-After": str(int(st.config.capture.recount_s))}))
    data = decode_base64(fb.image)
    if fb.detections is None:
        raw = (await st.pool.run(infer, loaded, data, PredictParams(), st.config.max_pixels)).raw
        dets = raw.detections.to_records(classes) if raw.detections is not None else []
    else:
        await st.pool.run(decode, data, st.config.max_pixels)  # refuse an undecodable image now, not in the writer
        dets = fb.detections
    rec_id = uuid.uuid4().hex
    version = fb.version or loaded.version
    if not st.captures.submit(CaptureJob(loaded.name, version, "flagged", data, classes, dets, fb.note, rec_id)):
        raise ApiError(503, "overloaded", "capture queue is full; retry shortly", {"Retry-After": "1"})
    return FeedbackResponse(accepted=True, id=rec_id, model=loaded.name, version=version)

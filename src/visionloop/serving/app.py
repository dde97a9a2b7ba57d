"""The FastAPI app: ``create_app(ServeConfig)``.

Handlers stay on the event loop only for cheap work (reading the body, building JSON);
decode + inference + drawing run in the bounded :class:`InferencePool`, so ``/health``
answers while models work and a flood gets 503 + Retry-After instead of an ever-growing queue.
Every error leaves as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import VisionloopError
from ..feedback.inbox import CapturedDetection
from ..settings import get_settings
from .annotate import annotate
from .capture import CaptureJob, CaptureWriter, to_captured
from .config import ServeConfig
from .errors import ApiError, from_visionloop, not_ready
from .inputs import decode_base64, parse_json, read_body, read_images
from .manager import InferencePool, LoadedModel, ModelManager, RuntimeOptions
from .metrics import Metrics
from .postprocess import class_name
from .preprocess import DecodedImage, decode_image
from .runtime import PredictParams, RawPrediction
from .schemas import (
    BatchItem, BatchResponse, Box, ClassScore, CompareItem, CompareResponse, Detection, ErrorBody, ErrorResponse,
    FeedbackRequest, FeedbackResponse, HealthResponse, ImageSize, ModelsResponse, Prediction, ReadyResponse,
    ReloadRequest, ReloadResponse, Timing,
)
from .sources import parse_spec

log = logging.getLogger("visionloop.serving")

_REF = "#/components/schemas/{model}"  # nested models (Detection, Box) are in the components already
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)}
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


@dataclass
class ServerState:
    config: ServeConfig
    manager: ModelManager
    pool: InferencePool
    metrics: Metrics
    captures: CaptureWriter


def _params(conf: float = Query(0.25, ge=0, le=1, description="Minimum confidence."),
            iou: float = Query(0.7, ge=0, le=1, description="NMS IoU threshold."),
            max_det: int = Query(300, ge=1, le=10000, description="Maximum detections."),
            top_k: int = Query(5, ge=1, le=1000, description="Classification: classes returned.")) -> PredictParams:
    return PredictParams(conf=conf, iou=iou, max_det=max_det, top_k=top_k)


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def build_state(config: ServeConfig) -> ServerState:
    metrics = Metrics()
    specs = [parse_spec(m) for m in config.models]
    spinning = config.spinning if config.spinning is not None else config.workers == 1
    options = RuntimeOptions(config.intra_threads, spinning, config.hold_file)
    return ServerState(config, ModelManager(specs, options, metrics), InferencePool(config.workers, config.queue, metrics),
                       metrics, CaptureWriter(config.capture, metrics, config.store_url))


def to_prediction(loaded: LoadedModel, raw: RawPrediction, decode_ms: float, started: float) -> Prediction:
    classes = loaded.model.info.classes
    dets = None
    if raw.detections is not None:
        dets = [Detection(class_id=int(c), class_name=class_name(classes, int(c)), confidence=round(s, 5),
                          box=Box(x1=round(x1, 2), y1=round(y1, 2), x2=round(x2, 2), y2=round(y2, 2)))
                for x1, y1, x2, y2, s, c in raw.detections.tolist()]
    top = [ClassScore(class_id=c, class_name=class_name(classes, c), confidence=round(p, 5)) for c, p in raw.classes] \
        if raw.classes is not None else None
    t = raw.timing_ms
    timing = Timing(decode=round(decode_ms, 3), preprocess=round(t["preprocess"], 3), inference=round(t["inference"], 3),
                    postprocess=round(t["postprocess"], 3), total=round((time.perf_counter() - started) * 1e3, 3))
    return Prediction(model=loaded.name, version=loaded.version, task=loaded.model.info.task,
                      image=ImageSize(width=raw.width, height=raw.height), detections=dets, classes=top, timing_ms=timing)


def _json(model) -> Response:
    return Response(model.model_dump_json(exclude_none=True), media_type="application/json")


def create_app(config: ServeConfig, state: ServerState | None = None) -> FastAPI:
    """The app; models load in a background thread at startup (``/ready`` says when)."""
    st = state or build_state(config)
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=_load, name="vl-load", daemon=True)
        loader.start()
        yield
        st.manager.stop()
        st.pool.shutdown()
        st.captures.close()

    def _load() -> None:
        st.manager.load_all()
        st.manager.start_watch(config.watch)

    app = FastAPI(title="visionloop", version=__version__, lifespan=lifespan,
                  description="ONNX Runtime inference with hot swap. Errors: `{\"error\": {\"code\", \"message\"}}`.")
    app.state.vl = st

    # -- errors ---------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(VisionloopError)
    async def _domain_error(request: Request, exc: VisionloopError):
        err = from_visionloop(exc)
        return _error(err.status, err.code, err.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path"))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return _error(422, "bad_parameter", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):  # only real bugs get here
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal server error (logged)")

    # -- the prediction pipeline ----------------------------------------------------------
    def _decode(data: bytes) -> tuple[DecodedImage, float]:
        t0 = time.perf_counter()
        img = decode_image(data, config.max_pixels)
        return img, (time.perf_counter() - t0) * 1e3

    def _predict_job(loaded: LoadedModel, data: bytes, params: PredictParams, draw: bool):
        img, decode_ms = _decode(data)
        raw = loaded.model.predict(img, params)
        jpeg = annotate(img.rgb, raw.detections, loaded.model.info.classes, raw.classes) if draw else None
        return raw, decode_ms, jpeg

    def _observe(loaded: LoadedModel, raw: RawPrediction, pred: Prediction, data: bytes) -> None:
        m = st.metrics
        for stage in ("decode", "preprocess", "inference", "postprocess", "total"):
            m.stage.labels(loaded.name, stage).observe(getattr(pred.timing_ms, stage) / 1e3)
        confs = None
        if raw.detections is not None:
            confs = raw.detections[:, 4]
            ids, counts = np.unique(raw.detections[:, 5].astype(int), return_counts=True)
            for c, n in zip(ids.tolist(), counts.tolist()):
                m.detections.labels(loaded.name, class_name(loaded.model.info.classes, c)).inc(n)
            for s in confs.tolist():
                m.confidence.labels(loaded.name).observe(s)
        elif raw.classes:
            m.confidence.labels(loaded.name).observe(raw.classes[0][1])
        reason = st.captures.reason(confs if raw.detections is not None else np.array([raw.classes[0][1]]))
        if reason:
            st.captures.submit(CaptureJob(loaded.name, loaded.version, reason, data, list(loaded.model.info.classes),
                                          to_captured(raw.detections, loaded.model.info.classes)))

    async def _predict(endpoint: str, name: str | None, request: Request, params: PredictParams, draw: bool = False):
        started = time.perf_counter()
        label_model, version, status = "unknown", "none", 500
        try:
            loaded = st.manager.get(name)
            label_model, version = loaded.name, loaded.version
            image = (await read_images(request, config.max_body_bytes))[0]
            raw, decode_ms, jpeg = await st.pool.run(_predict_job, loaded, image.data, params, draw)
            pred = to_prediction(loaded, raw, decode_ms, started)
            _observe(loaded, raw, pred, image.data)
            status = 200
            if draw:
                return Response(jpeg, media_type="image/jpeg", headers={
                    "X-Model": loaded.name, "X-Model-Version": loaded.version,
                    "X-Detections": str(len(pred.detections or [])), "X-Inference-Ms": str(pred.timing_ms.inference)})
            return _json(pred)
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            if label_model == "unknown" and name in st.manager.slots:
                label_model = name
            st.metrics.requests.labels(label_model, version, endpoint, str(status)).inc()

    # -- endpoints ------------------------------------------------------------------------
    @app.get("/health", response_model=HealthResponse, tags=["ops"])
    async def health():
        """Liveness: the process answers (models may still be loading)."""
        return HealthResponse()

    @app.get("/ready", response_model=ReadyResponse, responses={503: {"model": ErrorResponse}}, tags=["ops"])
    async def ready():
        """200 once every model is loaded and warmed up; 503 with Retry-After before."""
        states = {n: s.state for n, s in st.manager.slots.items()}
        if not st.manager.ready:
            waiting = ", ".join(f"{n} ({s})" for n, s in states.items() if s != "ready")
            raise not_ready(f"not ready: {waiting}")
        return ReadyResponse(ready=True, models=states)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics():
        """Prometheus text format."""
        return Response(st.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", response_model=ModelsResponse, tags=["models"])
    async def models():
        """Every model: version serving, alias, task, classes, input size, load state, last error."""
        return ModelsResponse(default=st.manager.default, models=st.manager.status())

    @app.post("/v1/models/{name}/predict", response_model=Prediction, response_model_exclude_none=True,
              responses=_ERRORS, openapi_extra=_IMAGE_BODY, tags=["predict"])
    async def predict(name: str, request: Request, params: PredictParams = Depends(_params)):
        """Detections (or top-k classes) for one image: multipart `file`, JSON `{"image": base64}` or a raw image body."""
        return await _predict("predict", name, request, params)

    @app.post("/v1/models/{name}/predict/annotated", response_class=Response, responses={
        200: {"content": {"image/jpeg": {}}, "description": "The image with boxes, labels and confidences."}, **_ERRORS},
        openapi_extra=_IMAGE_BODY, tags=["predict"])
    async def predict_annotated(name: str, request: Request, params: PredictParams = Depends(_params)):
        """The image as JPEG with the detections drawn; version in the `X-Model-Version` header."""
        return await _predict("annotated", name, request, params, draw=True)

    @app.post("/v1/models/{name}/predict/batch", response_model=BatchResponse, response_model_exclude_none=True,
              responses=_ERRORS, openapi_extra=_BATCH_BODY, tags=["predict"])
    async def predict_batch(name: str, request: Request, params: PredictParams = Depends(_params)):
        """Several images (multipart `file` repeated, or JSON `{"images": [...]}`); a bad image fails only its item."""
        started = time.perf_counter()
        loaded = st.manager.get(name)
        inputs = await read_images(request, config.max_body_bytes, many=True)

        def job():
            out = []
            for item in inputs:
                try:
                    out.append((item, _predict_job(loaded, item.data, params, False), None))
                except ApiError as exc:
                    out.append((item, None, exc))
            return out

        items = []
        for item, res, err in await st.pool.run(job):
            if err is not None:
                items.append(BatchItem(filename=item.filename, error=ErrorBody(code=err.code, message=err.message)))
                continue
            pred = to_prediction(loaded, res[0], res[1], started)
            _observe(loaded, res[0], pred, item.data)
            items.append(BatchItem(filename=item.filename, prediction=pred))
        st.metrics.requests.labels(loaded.name, loaded.version, "batch", "200").inc()
        return _json(BatchResponse(model=loaded.name, version=loaded.version, results=items))

    @app.post("/v1/compare", response_model=CompareResponse, response_model_exclude_none=True,
              responses=_ERRORS, openapi_extra=_IMAGE_BODY, tags=["predict"])
    async def compare(request: Request, params: PredictParams = Depends(_params)):
        """One image through every loaded model, side by side (e.g. custom vs. stock, or S/M/L)."""
        started = time.perf_counter()
        image = (await read_images(request, config.max_body_bytes))[0]
        models = {}
        for name in st.manager.slots:
            try:
                models[name] = st.manager.get(name)
            except ApiError as exc:
                models[name] = exc

        def job():
            img, decode_ms = _decode(image.data)
            return img, decode_ms, {n: (m.model.predict(img, params) if isinstance(m, LoadedModel) else m)
                                    for n, m in models.items()}

        img, decode_ms, results = await st.pool.run(job)
        items = []
        for n, res in results.items():
            if isinstance(res, ApiError):
                items.append(CompareItem(model=n, error=ErrorBody(code=res.code, message=res.message)))
                continue
            pred = to_prediction(models[n], res, decode_ms, started)
            _observe(models[n], res, pred, image.data)
            st.metrics.requests.labels(n, models[n].version, "compare", "200").inc()
            items.append(CompareItem(model=n, prediction=pred))
        return _json(CompareResponse(image=ImageSize(width=img.width, height=img.height), results=items))

    @app.post("/v1/feedback", response_model=FeedbackResponse, status_code=202, responses=_ERRORS, tags=["feedback"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": FeedbackRequest.model_json_schema(ref_template=_REF)}}}})
    async def feedback(request: Request):
        """Flag a prediction as wrong: the image and its prediction go to the capture inbox (reason `flagged`)."""
        body = await read_body(request, config.max_body_bytes)
        if not body:
            raise ApiError(400, "empty_body", "request body is empty")
        if not request.headers.get("content-type", "").lower().startswith("application/json"):
            raise ApiError(415, "unsupported_media_type", "send JSON: {\"image\": base64, \"model\", \"note\"}")
        try:
            fb = FeedbackRequest.model_validate(parse_json(body))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ApiError(422, "bad_parameter", str(exc).splitlines()[0]) from None
        loaded = st.manager.get(fb.model)
        data = decode_base64(fb.image)
        if fb.detections is None:
            raw, _, _ = await st.pool.run(_predict_job, loaded, data, PredictParams(), False)
            dets = to_captured(raw.detections, loaded.model.info.classes)
        else:
            await st.pool.run(_decode, data)  # refuse an undecodable image now, not in the writer
            dets = [CapturedDetection(class_id=d.class_id, class_name=d.class_name, confidence=d.confidence,
                                      **d.box.model_dump()) for d in fb.detections]
        rec_id = uuid.uuid4().hex
        version = fb.version or loaded.version
        job = CaptureJob(loaded.name, version, "flagged", data, list(loaded.model.info.classes), dets, fb.note, rec_id)
        if not st.captures.submit(job):
            raise ApiError(503, "overloaded", "capture queue is full; retry shortly", {"Retry-After": "1"})
        return FeedbackResponse(accepted=True, id=rec_id, model=loaded.name, version=version)

    @app.post("/v1/models/{name}/reload", response_model=ReloadResponse, tags=["models"],
              responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                         409: {"model": ErrorResponse}},
              openapi_extra={"requestBody": {"required": False, "content": {
                  "application/json": {"schema": ReloadRequest.model_json_schema(ref_template=_REF)}}}})
    async def reload(name: str, request: Request):
        """Admin (Bearer token): load a registry version or a file, or re-resolve the alias; swap when warmed up."""
        token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        if not token:
            raise ApiError(403, "admin_disabled", "reload is disabled: set VISIONLOOP_ADMIN_TOKEN on the server")
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].strip().encode(), token.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong admin token (Authorization: Bearer ...)")
        body = await read_body(request, 64 * 1024)
        req = ReloadRequest()
        if body.strip():
            try:
                req = ReloadRequest.model_validate(parse_json(body))
            except ValueError as exc:
                raise ApiError(422, "bad_parameter", str(exc).splitlines()[0]) from None
        return await run_in_threadpool(st.manager.reload, name, req.version, req.path)

    @app.post("/detect", response_model=Prediction, response_model_exclude_none=True, responses=_ERRORS,
              openapi_extra=_IMAGE_BODY, tags=["predict"])
    async def detect(request: Request, params: PredictParams = Depends(_params)):
        """flyingthings-compatible: predict with the default model."""
        return await _predict("detect", None, request, params)

    return app


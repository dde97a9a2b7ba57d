"""One prediction in the litserve shape: decode → run_model → encode, then observe.

``decode`` and ``run_model`` (and drawing) run on an inference thread of the
:class:`InferencePool`; ``encode`` and ``observe`` are cheap and run on the event loop. Every
route (predict, annotated, batch, compare, ``/detect``, feedback) is made of these pieces.
``observe`` also hands one compact record per answered prediction to the prediction log (a
queue put; the brightness was measured on the inference thread) and a capture to the writer
when the policy wants one: neither touches the store on the request path nor fails a request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from fastapi import Request

from ..feedback.scoring import DEFAULT_AGGREGATE, Aggregate, ImageScores, score_classification, score_detections
from ..monitoring.predlog import PredictionLog, PredictionRecord, mean_brightness
from ..predictions import ClassScore, class_name
from ..settings import get_settings
from .annotate import annotate
from .capture import CaptureJob, CaptureWriter
from .config import ServeConfig
from .errors import ApiError
from .manager import InferencePool, LoadedModel, ModelManager, RuntimeOptions
from .metrics import Metrics
from .preprocess import DecodedImage, decode_image
from .providers import resolve_providers
from .ratelimit import RateLimiter, parse_rate
from .runtime import PredictParams, RawPrediction
from .schemas import ImageSize, Prediction, Timing
from .sources import parse_spec

log = logging.getLogger("visionloop.serving")
STAGES = ("decode", "preprocess", "inference", "postprocess", "total")
WIRE_DIGITS = 2  # pixels to 2 decimals, confidences to 5 (the JSON the API promises)


@dataclass
class ServerState:
    config: ServeConfig
    manager: ModelManager
    pool: InferencePool
    metrics: Metrics
    captures: CaptureWriter
    admin_token: str = ""  # empty: reload is disabled
    predlog: PredictionLog | None = None  # None: --no-prediction-log
    feedback_limiter: RateLimiter | None = None
    feedback_token: str = ""  # empty: feedback is open


def build_state(config: ServeConfig) -> ServerState:
    metrics = Metrics()
    spinning = config.spinning if config.spinning is not None else config.workers == config.max_batch == 1
    options = RuntimeOptions(config.intra_threads, spinning, tuple(resolve_providers(config.provider)),
                             strict_provider=config.provider != "auto", max_batch=config.max_batch,
                             max_wait_ms=config.max_wait_ms, batch_runners=config.workers,
                             batch_adaptive=config.batch_policy == "adaptive")
    pool = InferencePool(config.workers, config.queue, metrics)
    # a batching model: --workers-threads batched runs at once, each request of a batch holding a pool thread
    manager = ModelManager([parse_spec(m) for m in config.models], options, metrics,
                           on_batching=lambda max_batch: pool.grow(config.workers * max_batch))
    token = get_settings().admin_token
    predlog = None
    if config.prediction_log:
        predlog = PredictionLog(config.store_url, on_drop=lambda why: metrics.predlog_dropped.labels(why).inc())
    return ServerState(config, manager, pool, metrics,
                       CaptureWriter(config.capture, metrics, config.store_url),
                       token.get_secret_value() if token else "", predlog,
                       RateLimiter(parse_rate(config.feedback_rate)),
                       config.feedback_token.get_secret_value() if config.feedback_token else "")


def close_state(st: ServerState) -> None:
    """Shutdown: stop watching and inferring, then write what the capture and log queues hold."""
    st.manager.stop()
    st.pool.shutdown()
    st.captures.close()
    if st.predlog is not None:
        st.predlog.close()


async def state_of(request: Request) -> ServerState:
    """FastAPI dependency: the app's state (one per ``create_app``). Async: FastAPI would run a
    plain ``def`` dependency on a threadpool thread, a thread hop per request."""
    return request.app.state.vl


# -- on an inference thread ------------------------------------------------------------------
@dataclass(frozen=True)
class Decoded:
    image: DecodedImage
    ms: float
    brightness: float  # mean luma, subsampled: for the prediction log


@dataclass(frozen=True)
class Ran:
    """One image through one model: the raw answer, the decode time, the JPEG when drawn."""

    raw: RawPrediction
    decode_ms: float
    brightness: float
    jpeg: bytes | None = None


def decode(data: bytes, max_pixels: int) -> Decoded:
    t0 = time.perf_counter()
    image = decode_image(data, max_pixels)
    ms = (time.perf_counter() - t0) * 1e3
    return Decoded(image, ms, mean_brightness(image.rgb))


def run_model(loaded: LoadedModel, image: DecodedImage, params: PredictParams) -> RawPrediction:
    return loaded.model.predict(image, params)


def infer(loaded: LoadedModel, data: bytes, params: PredictParams, max_pixels: int, draw: bool = False) -> Ran:
    """decode → run_model (→ draw): the job one predict request hands to the pool."""
    decoded = decode(data, max_pixels)
    raw = run_model(loaded, decoded.image, params)
    jpeg = annotate(decoded.image.rgb, raw.detections, loaded.model.info.classes, raw.classes) if draw else None
    return Ran(raw, decoded.ms, decoded.brightness, jpeg)


def infer_each(loaded: LoadedModel, items: list[bytes], params: PredictParams, max_pixels: int) -> list[Ran | ApiError]:
    """A batch: each image on its own, a bad one fails only its item."""
    out: list[Ran | ApiError] = []
    for data in items:
        try:
            out.append(infer(loaded, data, params, max_pixels))
        except ApiError as exc:
            out.append(exc)
    return out


def infer_all(models: dict[str, LoadedModel | ApiError], data: bytes, params: PredictParams,
              max_pixels: int) -> tuple[Decoded, dict[str, RawPrediction | ApiError]]:
    """Compare: one decode, then every model that is ready (the others keep their error)."""
    decoded = decode(data, max_pixels)
    return decoded, {n: run_model(m, decoded.image, params) if isinstance(m, LoadedModel) else m
                     for n, m in models.items()}


# -- on the event loop -----------------------------------------------------------------------
def encode(loaded: LoadedModel, raw: RawPrediction, decode_ms: float, started: float) -> Prediction:
    """The wire form; ``started`` is when the request arrived (``perf_counter``)."""
    classes = loaded.model.info.classes
    dets = raw.detections.to_records(classes, WIRE_DIGITS) if raw.detections is not None else None
    top = None
    if raw.classes is not None:
        top = [ClassScore(class_id=c, class_name=class_name(classes, c), confidence=round(p, WIRE_DIGITS + 3))
               for c, p in raw.classes]
    t = raw.timing_ms
    timing = Timing(decode=round(decode_ms, 3), preprocess=round(t["preprocess"], 3), inference=round(t["inference"], 3),
                    postprocess=round(t["postprocess"], 3), total=round((time.perf_counter() - started) * 1e3, 3))
    return Prediction(model=loaded.name, version=loaded.version, task=loaded.model.info.task,
                      image=ImageSize(width=raw.width, height=raw.height), detections=dets, classes=top, timing_ms=timing)


def observe(st: ServerState, loaded: LoadedModel, raw: RawPrediction, pred: Prediction, data: bytes,
            brightness: float) -> None:
    """Stage latencies, per-class counts and confidences; a prediction log record; a capture
    when the policy wants one."""
    m, name, classes = st.metrics, loaded.name, loaded.model.info.classes
    for stage in STAGES:
        m.stage.labels(name, stage).observe(getattr(pred.timing_ms, stage) / 1e3)
    per_class: dict[str, int] = {}
    if raw.detections is not None:
        confs = raw.detections.conf
        ids, counts = np.unique(raw.detections.cls, return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist()):
            per_class[class_name(classes, c)] = n
            m.detections.labels(name, class_name(classes, c)).inc(n)
    else:  # classification: the top-1 probability stands for the answer's confidence
        confs = np.array([raw.classes[0][1]]) if raw.classes else np.zeros(0)
        per_class = {class_name(classes, raw.classes[0][0]): 1} if raw.classes else {}
    for s in confs.tolist():
        m.confidence.labels(name).observe(s)
    if st.predlog is not None:
        _log_prediction(st.predlog, loaded, raw, confs, per_class, brightness)
    reason = st.captures.reason(confs, raw.classes)
    if reason:
        scores = image_scores(raw, st.config.capture.aggregate)
        if st.captures.admit(name, scores.classes):
            dets = raw.detections.to_records(classes) if raw.detections is not None else []
            st.captures.submit(CaptureJob(name, loaded.version, reason, data, list(classes), dets,
                                          top=pred.classes or [], scores=scores))


def image_scores(raw: RawPrediction, aggregate: Aggregate = DEFAULT_AGGREGATE) -> ImageScores:
    """The uncertainty scores of one answer, from the full class scores the runtime kept."""
    if raw.detections is None:  # classification: the runtime keeps the whole softmax
        return score_classification(raw.class_scores)
    per_box = raw.class_scores if raw.class_scores is not None and len(raw.class_scores) == len(raw.detections) \
        else None  # end-to-end heads keep no runner-up classes
    return score_detections(raw.detections.conf, per_box, raw.threshold, aggregate, cls=raw.detections.cls)


def _log_prediction(predlog: PredictionLog, loaded: LoadedModel, raw: RawPrediction, confs: np.ndarray,
                    per_class: dict[str, int], brightness: float) -> None:
    try:
        predlog.add(PredictionRecord(ts=time.time(), model=loaded.name, version=loaded.version,
                                     task=loaded.model.info.task, width=raw.width, height=raw.height,
                                     brightness=round(brightness, 2), confidences=np.round(confs, 4).tolist(),
                                     classes=per_class))
    except Exception:  # noqa: BLE001 - statistics must never fail the prediction they describe
        log.exception("prediction log record not built")
        if predlog.on_drop is not None:
            predlog.on_drop("bad_record")


def count(st: ServerState, model: str, version: str, endpoint: str, status: int) -> None:
    st.metrics.requests.labels(model, version, endpoint, str(status)).inc()

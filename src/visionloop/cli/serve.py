"""`visionloop serve`: the ONNX Runtime inference server (FastAPI + uvicorn)."""

from __future__ import annotations

from typing import Optional

import typer
from pydantic import SecretStr

from ..errors import ValidationError


def serve(
    # every option a container sets has an environment variable (docker/serve.Dockerfile)
    model: list[str] = typer.Option(..., "--model", "-m", envvar="VISIONLOOP_MODEL",
                                    help="PATH.onnx, NAME/VERSION or NAME@ALIAS (NAME=SOURCE renames); repeat for "
                                         "several models, the first is the default (env: space-separated)."),
    host: str = typer.Option("127.0.0.1", envvar="VISIONLOOP_HOST", help="Interface to bind."),
    port: int = typer.Option(8000, envvar="VISIONLOOP_PORT", help="TCP port."),
    watch: float = typer.Option(0.0, envvar="VISIONLOOP_WATCH",
                                help="Poll aliases every SECONDS and hot-swap when they move (0: off)."),
    capture: str = typer.Option("none", envvar="VISIONLOOP_CAPTURE",
                                help="Capture to the inbox: none | low-confidence | all."),
    capture_range: str = typer.Option("0.25,0.6", help="LOW,HIGH confidence counted as low confidence "
                                      "(classification: a top-1 at or below HIGH)."),
    capture_margin: float = typer.Option(0.1, min=0.0, max=1.0, help="Classification: capture when top-1 minus "
                                         "top-2 is under this."),
    capture_rate: float = typer.Option(1.0, min=0.0, max=1.0, help="Fraction of eligible images captured."),
    capture_max: int = typer.Option(1000, min=1, help="Most captures waiting for a human (pending + in labeling) "
                                                     "per model; labeled and archived ones do not count."),
    capture_full: str = typer.Option("refuse", help="At --capture-max: refuse (drop the new capture, counted) or "
                                                    "drop-oldest (mark the oldest pending one discarded)."),
    capture_caps: str = typer.Option("off", help="At most N captures per window, e.g. 20/min,300/h,2000/d "
                                                  "(per model; off: no cap)."),
    capture_class_quota: str = typer.Option("off", help="At most N captures per predicted class per window, "
                                                         "e.g. 200/d (off: no quota)."),
    capture_aggregate: str = typer.Option("mean", help="How box scores make a capture's uncertainty score: "
                                                       "max | mean | sum."),
    prediction_log: bool = typer.Option(True, "--prediction-log/--no-prediction-log",
                                        help="Write a compact record of every prediction to the store (monitor reads it)."),
    feedback_token: Optional[str] = typer.Option(None, "--feedback-token", envvar="VISIONLOOP_FEEDBACK_TOKEN",
                                                 show_default=False, help="Bearer token /v1/feedback requires "
                                                 "(default: open). Never printed."),
    feedback_rate: str = typer.Option("60/min", help="Feedback requests per client IP: N/s, N/min, N/h (0: no limit)."),
    feedback_max_mb: float = typer.Option(10.0, min=0.001, help="Largest /v1/feedback body, MB."),
    max_body_mb: float = typer.Option(20.0, min=0.001, help="Largest request body, MB."),
    max_pixels: int = typer.Option(50_000_000, min=1, help="Largest image (width x height), checked before decoding."),
    workers_threads: int = typer.Option(2, "--workers-threads", min=1, help="Concurrent inference threads."),
    queue: int = typer.Option(64, min=1, help="Queued + running inference jobs before answering 503."),
    provider: str = typer.Option("auto", envvar="VISIONLOOP_PROVIDER", help="onnxruntime execution provider: auto "
                                 "(CUDA, with TensorRT when present, else CPU) | cpu | cuda | tensorrt | openvino; a "
                                 "named one that is missing is an error."),
    intra_threads: int = typer.Option(0, min=0, help="onnxruntime threads per session (0: the CPUs this "
                                      "process may use, quota-aware; concurrent requests share the session's pool)."),
    max_batch: int = typer.Option(1, min=1, envvar="VISIONLOOP_MAX_BATCH", help="Micro-batching: run up to N "
                                  "concurrent requests to a model as one batch (1: off; models with a fixed batch "
                                  "dimension stay unbatched); each of --workers-threads runs one batch at a time."),
    max_wait_ms: float = typer.Option(2.0, min=0.0, envvar="VISIONLOOP_MAX_WAIT_MS",
                                      help="Micro-batching: how long a batch waits for more requests."),
    batch_policy: str = typer.Option("adaptive", envvar="VISIONLOOP_BATCH_POLICY", help="Micro-batching: adaptive "
                                     "(batch a model only if, measured at load, its batches are at least 10% cheaper "
                                     "per image than single runs) | always."),
    access_log: bool = typer.Option(False, help="Log every request (costs throughput)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve models over HTTP: predict, compare, hot swap, captures, Prometheus metrics."""
    from ..serving.capture import CapturePolicy, parse_range
    from ..serving.config import ServeConfig
    from ..serving.sources import parse_spec, resolve

    from ..serving.ratelimit import parse_rate

    if batch_policy not in ("adaptive", "always"):
        raise ValidationError(f"--batch-policy must be adaptive or always, not {batch_policy!r}")
    if capture not in ("none", "low-confidence", "all"):
        raise ValidationError(f"--capture must be none, low-confidence or all, not {capture!r}")
    if capture_full not in ("refuse", "drop-oldest"):
        raise ValidationError(f"--capture-full must be refuse or drop-oldest, not {capture_full!r}")
    try:
        low, high = parse_range(capture_range)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    from ..feedback.scoring import AGGREGATES
    from ..serving.capture_limits import parse_windows

    if capture_aggregate not in AGGREGATES:
        raise ValidationError(f"--capture-aggregate must be one of {', '.join(AGGREGATES)}, not {capture_aggregate!r}")
    try:
        caps = parse_windows(capture_caps, "--capture-caps")
        class_quota = parse_windows(capture_class_quota, "--capture-class-quota")
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    try:
        parse_rate(feedback_rate)
    except ValueError as exc:
        raise ValidationError(f"--feedback-{exc}") from None
    from ..serving.providers import resolve_providers

    resolve_providers(provider)  # a missing provider: one line, before any download
    for spec in (parse_spec(m) for m in model):  # fail fast on a typo or unknown ref, before binding the port
        resolve(spec)  # registry refs: downloads into the cache the loader then reuses
    config = ServeConfig(
        models=model, watch=watch,
        capture=CapturePolicy(mode=capture, low=low, high=high, margin=capture_margin, rate=capture_rate,
                              max_per_model=capture_max,
                              full=capture_full, caps=caps, class_quota=class_quota,  # type: ignore[arg-type]
                              aggregate=capture_aggregate),  # type: ignore[arg-type]
        max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=max_pixels, workers=workers_threads, queue=queue,
        intra_threads=intra_threads or None, max_batch=max_batch, max_wait_ms=max_wait_ms,
        batch_policy=batch_policy, provider=provider,  # type: ignore[arg-type]
        prediction_log=prediction_log,
        feedback_token=SecretStr(feedback_token) if feedback_token else None, feedback_rate=feedback_rate,
        feedback_max_body_bytes=int(feedback_max_mb * 1024 * 1024),
    )
    import logging

    import uvicorn

    # swaps, load failures and dropped captures are logged by visionloop.serving.*; uvicorn has its own loggers
    logging.basicConfig(level=log_level.upper() if log_level.upper() in logging.getLevelNamesMapping() else "INFO",
                        format="%(levelname)s:     %(name)s: %(message)s")

    from ..serving.app import create_app

    app = create_app(config)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log, timeout_graceful_shutdown=5)

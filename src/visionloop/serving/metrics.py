"""Prometheus metrics for one app instance (own registry, so tests can build several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONF_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("visionloop_requests", "Prediction requests by model, version, endpoint and status.",
                                ["model", "version", "endpoint", "status"], registry=r)
        self.stage = Histogram("visionloop_stage_seconds", "Latency per pipeline stage.",
                               ["model", "stage"], buckets=STAGE_BUCKETS, registry=r)
        self.detections = Counter("visionloop_detections", "Detections returned, per class.",
                                  ["model", "class_name"], registry=r)
        self.confidence = Histogram("visionloop_confidence", "Confidence of returned detections / top-1 classes.",
                                    ["model"], buckets=CONF_BUCKETS, registry=r)
        self.model_info = Gauge("visionloop_model_info", "1 for the version each model serves now.",
                                ["model", "version", "task", "alias"], registry=r)
        self.swaps = Counter("visionloop_model_swaps", "Hot swaps to a new version.", ["model"], registry=r)
        self.load_failures = Counter("visionloop_model_load_failures", "Loads or reloads that failed.",
                                     ["model"], registry=r)
        self.watch_errors = Counter("visionloop_watch_errors", "Watcher polls that failed (registry, download, "
                                    "load or warm-up); the watcher keeps polling.", ["model"], registry=r)
        self.batch_size = Histogram("visionloop_batch_size", "Images per batched session run (--max-batch).",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("visionloop_queue_depth", "Inference jobs waiting or running.", registry=r)
        self.rejected = Counter("visionloop_rejected", "Requests refused with 503 (queue full or not ready).",
                                ["reason"], registry=r)
        self.captures = Counter("visionloop_captures", "Images written to the capture inbox.",
                                ["model", "reason"], registry=r)
        self.captures_dropped = Counter("visionloop_captures_dropped", "Captures not written.",
                                        ["model", "why"], registry=r)
        self.captures_waiting = Gauge("visionloop_captures_waiting", "Captures pending or in labeling (what the"
                                      " cap counts), as this server last counted them.", ["model"], registry=r)
        self.captures_discarded = Counter("visionloop_captures_discarded", "Oldest pending captures discarded to"
                                          " make room (--capture-full drop-oldest).", ["model"], registry=r)
        self.feedback_refused = Counter("visionloop_feedback_refused", "Feedback refused: unauthorized,"
                                        " rate_limited, bad_class, inbox_full.", ["why"], registry=r)
        self.predlog_dropped = Counter("visionloop_predlog_dropped", "Prediction log records not written.",
                                       ["why"], registry=r)
        self._info_labels: dict[str, tuple[str, str, str, str]] = {}

    def set_model(self, name: str, version: str, task: str, alias: str | None) -> None:
        """Point the info gauge at the version now serving (the old series is removed)."""
        old = self._info_labels.get(name)
        if old:
            try:
                self.model_info.remove(*old)
            except KeyError:
                pass
        labels = (name, version, task, alias or "")
        self.model_info.labels(*labels).set(1)
        self._info_labels[name] = labels

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Capture worth-labeling images into the inbox, off the request path.

The request thread only decides (:func:`capture_reason`) and enqueues; one background thread
writes through :func:`visionloop.feedback.inbox.write_capture`. Both the queue and the inbox
per model are bounded: when either is full the capture is dropped and counted
(``visionloop_captures_dropped``). A slow, full or failing store never fails a prediction.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..datasets import images
from ..feedback.inbox import CaptureRecord, Reason, count_captures, write_capture
from ..predictions import Detection
from ..store import Store, open_store, sha256_bytes
from .metrics import Metrics

log = logging.getLogger("visionloop.serving.capture")
Mode = Literal["none", "low-confidence", "all"]


@dataclass(frozen=True)
class CapturePolicy:
    mode: Mode = "none"
    low: float = 0.25
    high: float = 0.6
    rate: float = 1.0  # fraction of eligible images kept (a random sample)
    max_per_model: int = 1000
    queue_size: int = 64


def parse_range(value: str) -> tuple[float, float]:
    """``"0.25,0.6"`` → (0.25, 0.6), checked."""
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise ValueError(f"--capture-range wants LOW,HIGH like 0.25,0.6, got {value!r}") from None
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"--capture-range {value!r}: need 0 <= LOW <= HIGH <= 1")
    return lo, hi


def capture_reason(policy: CapturePolicy, confidences: np.ndarray | None, rng: random.Random) -> Reason | None:
    """Why this prediction is worth labeling, or None. ``confidences`` of the returned detections."""
    if policy.mode == "none" or (policy.rate < 1 and rng.random() >= policy.rate):
        return None
    if confidences is not None and len(confidences) == 0:
        return "no-detection"
    if confidences is not None and bool(((confidences >= policy.low) & (confidences <= policy.high)).any()):
        return "low-confidence"
    return "all" if policy.mode == "all" else None


@dataclass(frozen=True)
class CaptureJob:
    model: str
    version: str
    reason: Reason
    data: bytes
    classes: list[str]
    detections: list[Detection]
    note: str = ""
    record_id: str | None = None


class CaptureWriter:
    """Bounded queue + one writer thread. ``submit`` never blocks and never raises."""

    def __init__(self, policy: CapturePolicy, metrics: Metrics, store_url: str | None = None):
        self.policy = policy
        self.metrics = metrics
        self.store_url = store_url
        self._store: Store | None = None
        self._queue: queue.Queue[CaptureJob | None] = queue.Queue(maxsize=max(1, policy.queue_size))
        self._counts: dict[str, int] = {}
        self._rng = random.Random()
        self._thread = threading.Thread(target=self._run, name="vl-capture", daemon=True)
        self._thread.start()

    def reason(self, confidences: np.ndarray | None) -> Reason | None:
        return capture_reason(self.policy, confidences, self._rng)

    def submit(self, job: CaptureJob) -> bool:
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            self.metrics.captures_dropped.labels(job.model, "queue_full").inc()
            return False

    def _store_or_open(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_url)
        return self._store

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._write(job)
            except Exception as exc:  # a failing store must not kill the thread or any request
                self.metrics.captures_dropped.labels(job.model, "store_error").inc()
                log.warning("capture for %s not written: %s", job.model, type(exc).__name__)
            finally:
                self._queue.task_done()

    def _write(self, job: CaptureJob) -> None:
        store = self._store_or_open()
        if job.model not in self._counts:
            self._counts[job.model] = count_captures(store, job.model)
        if self._counts[job.model] >= self.policy.max_per_model and job.reason != "flagged":
            self.metrics.captures_dropped.labels(job.model, "inbox_full").inc()
            return
        prepared = images.prepare(job.data)  # EXIF-rotated images re-encoded: boxes match the pixels
        fields = {"id": job.record_id} if job.record_id else {}
        record = CaptureRecord(model=job.model, version=job.version, reason=job.reason,
                               image_sha256=sha256_bytes(prepared.data), ext=prepared.ext, width=prepared.width,
                               height=prepared.height, classes=job.classes, detections=job.detections,
                               note=job.note, **fields)
        write_capture(store, record, prepared.data)
        self._counts[job.model] += 1
        self.metrics.captures.labels(job.model, job.reason).inc()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until queued captures are written (shutdown, tests)."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

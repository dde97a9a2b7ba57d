"""Capture worth-labeling images into the inbox, off the request path.

The request thread only decides (:func:`capture_reason`) and enqueues; one background thread
writes through :func:`visionloop.feedback.inbox.write_capture`. Both the queue and the inbox
per model are bounded. The inbox cap counts only captures still waiting for a human
(``pending`` + ``in_labeling``), kept as an in-memory count per model: seeded from the store
on the model's first capture and recounted only when it reaches the cap (at most every
``recount_s``), so labels pushed or pulled by other processes free room without a listing per
capture. When the cap is hit, ``full="refuse"`` drops the new capture
(``visionloop_captures_dropped{why="inbox_full"}``) and ``"drop-oldest"`` marks the oldest
pending one ``discarded`` (archived, never deleted; ``visionloop_captures_discarded``).
A slow, full or failing store never fails a prediction: the drop is counted.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..datasets import images
from ..feedback.inbox import CaptureRecord, Reason, read_capture, set_state, waiting_captures, write_capture
from ..predictions import ClassScore, Detection
from ..store import Store, open_store, sha256_bytes
from ..feedback.scoring import DEFAULT_AGGREGATE, Aggregate, ImageScores
from .capture_limits import CaptureLimits, Window
from .metrics import Metrics

log = logging.getLogger("visionloop.serving.capture")
Mode = Literal["none", "low-confidence", "all"]
Full = Literal["refuse", "drop-oldest"]


@dataclass(frozen=True)
class CapturePolicy:
    mode: Mode = "none"
    low: float = 0.25
    high: float = 0.6
    margin: float = 0.1  # classification: top-1 minus top-2 under this is worth a label
    rate: float = 1.0  # fraction of eligible images kept (a random sample)
    max_per_model: int = 1000  # waiting (pending + in_labeling) captures per model
    queue_size: int = 64
    full: Full = "refuse"  # what a capture meets at the cap
    recount_s: float = 30.0  # a full cap re-reads the store at most this often
    caps: tuple[Window, ...] = ()  # --capture-caps: at most N captures per window, per model
    class_quota: tuple[Window, ...] = ()  # --capture-class-quota: at most N per predicted class per window
    aggregate: Aggregate = DEFAULT_AGGREGATE  # how box scores make an image's (feedback.scoring)


def parse_range(value: str) -> tuple[float, float]:
    """``"0.25,0.6"`` → (0.25, 0.6), checked."""
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise ValueError(f"--capture-range wants LOW,HIGH like 0.25,0.6, got {value!r}") from None
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"--capture-range {value!r}: need 0 <= LOW <= HIGH <= 1")
    return lo, hi


def capture_reason(policy: CapturePolicy, confidences: np.ndarray | None, rng: random.Random,
                   top: list[tuple[int, float]] | None = None) -> Reason | None:
    """Why this prediction is worth labeling, or None. Detection: ``confidences`` of the returned
    detections (none at all, or one inside [low, high]). Classification: ``top`` (class, probability),
    best first: a top-1 at or below ``high`` or a top-1/top-2 margin under ``margin``."""
    if policy.mode == "none" or (policy.rate < 1 and rng.random() >= policy.rate):
        return None
    if top is not None:
        if top and top[0][1] <= policy.high:
            return "low-confidence"
        if len(top) > 1 and top[0][1] - top[1][1] < policy.margin:
            return "low-margin"
    elif confidences is not None and len(confidences) == 0:
        return "no-detection"
    elif confidences is not None and bool(((confidences >= policy.low) & (confidences <= policy.high)).any()):
        return "low-confidence"
    return "all" if policy.mode == "all" else None


@dataclass
class _Waiting:
    """One model's captures under the cap, as this server last counted them."""

    count: int
    pending: deque[str] = field(default_factory=deque)  # pending ids, oldest first: drop-oldest's candidates
    counted_at: float = 0.0  # time.monotonic() of the last count from the store


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
    top: list[ClassScore] = field(default_factory=list)  # classification: what the model said
    scores: ImageScores | None = None  # uncertainty, computed where the prediction was made


class CaptureWriter:
    """Bounded queue + one writer thread. ``submit`` never blocks and never raises."""

    def __init__(self, policy: CapturePolicy, metrics: Metrics, store_url: str | None = None):
        self.policy = policy
        self.metrics = metrics
        self.store_url = store_url
        self._store: Store | None = None
        self._queue: queue.Queue[CaptureJob | None] = queue.Queue(maxsize=max(1, policy.queue_size))
        self._waiting: dict[str, _Waiting] = {}  # only the writer thread changes it
        self._rng = random.Random()
        self._limits = CaptureLimits(policy.caps, policy.class_quota)
        self._thread = threading.Thread(target=self._run, name="vl-capture", daemon=True)
        self._thread.start()

    def reason(self, confidences: np.ndarray | None, top: list[tuple[int, float]] | None = None) -> Reason | None:
        return capture_reason(self.policy, confidences, self._rng, top)

    def admit(self, model: str, classes: list[int]) -> bool:
        """The caps and class quotas (request thread): False, counted as dropped, when one is full."""
        why = self._limits.admit(model, classes)
        if why is not None:
            self.metrics.captures_dropped.labels(model, why).inc()
        return why is None

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

    def has_room(self, model: str) -> bool:
        """Cheap guess for the request thread (no store access): False when a refusing cap is full."""
        w = self._waiting.get(model)
        return self.policy.full != "refuse" or w is None or w.count < self.policy.max_per_model

    def _counted(self, store: Store, model: str, recount: bool = False) -> _Waiting:
        w = self._waiting.get(model)
        if w is None or recount:
            records = waiting_captures(store, model)
            w = _Waiting(len(records), deque(r.id for r in records if r.state == "pending"), time.monotonic())
            self._waiting[model] = w
            self.metrics.captures_waiting.labels(model).set(w.count)
        return w

    def _make_room(self, store: Store, model: str) -> bool:
        """Whether one more capture fits under the cap (discarding the oldest pending one if allowed)."""
        cap, w = self.policy.max_per_model, self._counted(store, model)
        if w.count >= cap and time.monotonic() - w.counted_at >= self.policy.recount_s:
            w = self._counted(store, model, recount=True)  # others may have moved captures on
        while w.count >= cap and self.policy.full == "drop-oldest" and w.pending:
            old = read_capture(store, model, w.pending.popleft())
            if old is None or old.state not in ("pending", "in_labeling"):
                w.count -= 1  # it moved on meanwhile: room without discarding anything
            elif old.state == "pending":
                set_state(store, old, "discarded")
                w.count -= 1
                self.metrics.captures_discarded.labels(model).inc()
        return w.count < cap

    def _write(self, job: CaptureJob) -> None:
        store = self._store_or_open()
        if not self._make_room(store, job.model):
            self.metrics.captures_dropped.labels(job.model, "inbox_full").inc()
            return
        prepared = images.prepare(job.data)  # EXIF-rotated images re-encoded: boxes match the pixels
        fields = {"id": job.record_id} if job.record_id else {}
        record = CaptureRecord(model=job.model, version=job.version, reason=job.reason,
                               image_sha256=sha256_bytes(prepared.data), ext=prepared.ext, width=prepared.width,
                               height=prepared.height, classes=job.classes, detections=job.detections,
                               top=job.top, note=job.note, scores=job.scores, **fields)
        write_capture(store, record, prepared.data)
        w = self._waiting[job.model]
        w.count += 1
        w.pending.append(record.id)
        self.metrics.captures.labels(job.model, job.reason).inc()
        self.metrics.captures_waiting.labels(job.model).set(w.count)

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

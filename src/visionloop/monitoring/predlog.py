"""The prediction log: a compact record of every prediction the server answers.

The server calls :meth:`PredictionLog.add` on the request path; a background thread writes
batches as JSONL files to the store, so a slow or failing store never delays or breaks a
prediction (a full queue or a failed write is counted through ``on_drop``). Records hold numbers
only, no image bytes. Layout: ``predlog/MODEL/VERSION/YYYYMMDDTHH/<unix-ms>-<uuid8>.jsonl``;
hour folders older than ``retention_days`` are removed at flush time.

Torch-free and cheap to import: the server imports it.
"""

from __future__ import annotations

import logging
import posixpath
import queue
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ..predictions import Task

if TYPE_CHECKING:
    from ..serving.runtime import RawPrediction
    from ..store import Store

log = logging.getLogger(__name__)

PREFIX = "predlog"
HOUR_FORMAT = "%Y%m%dT%H"


class PredictionRecord(BaseModel):
    ts: float  # unix seconds
    model: str
    version: str
    task: Task
    width: int
    height: int
    brightness: float  # mean luma 0..255 of the decoded image (subsampled)
    confidences: list[float]  # detections' confidences (classify: the top-1 probability)
    classes: dict[str, int]  # detections per class name (classify: {top1_name: 1})


def mean_brightness(rgb: Any, max_samples: int = 4096) -> float:
    """Mean luma (0..255, BT.601) of an HxWx3 uint8 array, on a strided subsample (cheap)."""
    import numpy as np

    h, w = rgb.shape[:2]
    step = max(1, int((h * w / max_samples) ** 0.5))
    px = np.asarray(rgb[::step, ::step, :3], dtype=np.float32)
    return float((px @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean()) if px.size else 0.0


def make_record(model: str, version: str, task: Task, raw: RawPrediction, classes: list[str],
                brightness: float, ts: float | None = None) -> PredictionRecord:
    """The log record of one answer (server and test-split reference build it the same way)."""
    from ..predictions import class_name

    if raw.detections is not None:
        confs = [round(float(c), 4) for c in raw.detections.conf.tolist()]
        per_class: dict[str, int] = defaultdict(int)
        for c in raw.detections.cls.tolist():
            per_class[class_name(classes, int(c))] += 1
    else:  # classification: the top-1 answer stands for the image
        top = raw.classes[0] if raw.classes else None
        confs = [round(float(top[1]), 4)] if top else []
        per_class = {class_name(classes, top[0]): 1} if top else {}
    return PredictionRecord(ts=time.time() if ts is None else ts, model=model, version=version, task=task,
                            width=raw.width, height=raw.height, brightness=round(brightness, 2),
                            confidences=confs, classes=dict(per_class))


def hour_folder(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime(HOUR_FORMAT)


def _hour_start(name: str) -> datetime | None:
    try:
        return datetime.strptime(name, HOUR_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def batch_key(model: str, version: str, hour: str, now: float | None = None) -> str:
    ms = int((time.time() if now is None else now) * 1000)
    return f"{PREFIX}/{model}/{version}/{hour}/{ms}-{uuid.uuid4().hex[:8]}.jsonl"


def write_batch(store: Store, records: list[PredictionRecord]) -> list[str]:
    """Write ``records`` as one JSONL file per (model, version, hour); the keys written."""
    groups: dict[tuple[str, str, str], list[PredictionRecord]] = defaultdict(list)
    for r in records:
        groups[(r.model, r.version, hour_folder(r.ts))].append(r)
    keys = []
    for (model, version, hour), recs in groups.items():
        key = batch_key(model, version, hour)
        data = "".join(r.model_dump_json() + "\n" for r in recs).encode()
        store.write_bytes(key, data, durable=False)  # a lost batch costs statistics, not data
        keys.append(key)
    return keys


def prune(store: Store, retention_days: float, now: datetime | None = None) -> int:
    """Remove hour folders that ended more than ``retention_days`` ago; how many were removed."""
    cut = (now or datetime.now(timezone.utc)) - timedelta(days=retention_days)
    removed = 0
    for model in store.list(PREFIX):
        for version in store.list(f"{PREFIX}/{model}"):
            base = f"{PREFIX}/{model}/{version}"
            for hour in store.list(base):
                start = _hour_start(hour)
                if start is not None and start + timedelta(hours=1) <= cut:
                    store.fs.rm(posixpath.join(store.root, base, hour), recursive=True)
                    removed += 1
    return removed


class PredictionLog:
    """Queue of records and the thread that writes them in batches."""

    def __init__(self, store_url: str | None = None, *, batch: int = 256, flush_s: float = 5.0,
                 queue_size: int = 10000, retention_days: float = 30.0,
                 on_drop: Callable[[str], None] | None = None):
        self.store_url = store_url
        self.batch = max(1, batch)
        self.flush_s = flush_s
        self.retention_days = retention_days
        self.on_drop = on_drop
        self.dropped: dict[str, int] = defaultdict(int)
        self.written = 0
        self.prune_every_s = 300.0  # a retention pass lists the whole log: not on every batch
        self._pruned_at = float("-inf")
        self.close_timeout_s = max(10.0, flush_s * 2)  # how long shutdown waits for a slow store
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=max(1, queue_size))
        self._store: Store | None = None
        self._write_lock = threading.Lock()  # the thread and flush() never write the same batch twice
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visionloop-predlog", daemon=True)
        self._thread.start()

    def add(self, rec: PredictionRecord) -> bool:
        """Queue ``rec``; never blocks, never raises. False when it was dropped."""
        if self._stop.is_set():
            self._drop("closed")
            return False
        try:
            self._queue.put_nowait(rec)
        except queue.Full:
            self._drop("queue_full")
            return False
        if self._queue.qsize() >= self.batch:
            self._wake.set()
        return True

    def flush(self) -> None:
        """Write everything queued now, then apply retention (tests, shutdown)."""
        self._flush(prune=True)

    def _flush(self, prune: bool) -> None:
        while self._write_some():
            pass
        if prune or time.monotonic() - self._pruned_at >= self.prune_every_s:
            self._pruned_at = time.monotonic()
            self._prune()

    def close(self) -> None:
        """Stop the thread after it has written what is queued."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.close_timeout_s)
        if self._thread.is_alive():  # a hung store: do not hang the server's shutdown with it
            lost = self._queue.qsize()
            log.warning("prediction log: store not answering at shutdown, %d records lost", lost)
            for _ in range(lost):
                self._drop("shutdown")
            return
        self.flush()

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            try:
                self._flush(prune=False)
            except Exception:  # noqa: BLE001 - the thread must outlive any bug or store error
                log.exception("prediction log writer failed")

    def _get_store(self) -> Store:
        if self._store is None:
            from ..store import open_store

            self._store = open_store(self.store_url)
        return self._store

    def _take(self) -> list[PredictionRecord]:
        out: list[PredictionRecord] = []
        while len(out) < self.batch:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return out

    def _write_some(self) -> bool:
        """Write one batch; False when the queue was empty."""
        with self._write_lock:
            records = self._take()
            if not records:
                return False
            try:
                write_batch(self._get_store(), records)
                self.written += len(records)
            except Exception as exc:  # noqa: BLE001 - any store failure is a counted drop
                log.warning("prediction log: %d records lost: %s", len(records), exc)
                for _ in records:
                    self._drop("write_failed")
            return True

    def _prune(self) -> None:
        try:
            prune(self._get_store(), self.retention_days)
        except Exception as exc:  # noqa: BLE001 - retention is best effort, retried next flush
            log.warning("prediction log retention failed: %s", exc)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        if self.on_drop is not None:
            try:
                self.on_drop(reason)
            except Exception:  # noqa: BLE001 - a broken metric hook must not break add()
                log.exception("prediction log on_drop hook failed")


# -- reading --------------------------------------------------------------------------------
def _versions(store: Store, model: str, version: str | None) -> list[str]:
    return [version] if version is not None else store.list(f"{PREFIX}/{model}")


def _in_range(hour: str, since: datetime | None, until: datetime | None) -> bool:
    start = _hour_start(hour)
    if start is None:
        return False
    if since is not None and start + timedelta(hours=1) <= since:
        return False
    return until is None or start <= until


def iter_predictions(store: Store, model: str, version: str | None = None,
                     since: datetime | None = None, until: datetime | None = None) -> Iterator[PredictionRecord]:
    lo = since.timestamp() if since is not None else float("-inf")
    hi = until.timestamp() if until is not None else float("inf")
    for v in _versions(store, model, version):
        base = f"{PREFIX}/{model}/{v}"
        for hour in store.list(base):
            if not _in_range(hour, since, until):
                continue
            for name in store.list(f"{base}/{hour}"):
                yield from _read_file(store, f"{base}/{hour}/{name}", lo, hi)


def _read_file(store: Store, key: str, lo: float, hi: float) -> Iterator[PredictionRecord]:
    try:
        lines = store.read_bytes(key).decode().splitlines()
    except Exception as exc:  # noqa: BLE001 - pruned meanwhile, or unreadable: skip it
        log.warning("prediction log: cannot read %s: %s", key, exc)
        return
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = PredictionRecord.model_validate_json(line)
        except ValidationError:
            continue
        if lo <= rec.ts <= hi:
            yield rec


def read_predictions(store: Store, model: str, version: str | None = None,
                     since: datetime | None = None, until: datetime | None = None) -> list[PredictionRecord]:
    """Records of ``model`` (one ``version`` or all) with ``since <= ts <= until``, oldest first."""
    return sorted(iter_predictions(store, model, version, since, until), key=lambda r: r.ts)


def first_timestamp(store: Store, model: str, version: str) -> float | None:
    """When ``version`` first answered (its oldest hour folder is read, nothing else)."""
    base = f"{PREFIX}/{model}/{version}"
    for hour in (h for h in store.list(base) if _hour_start(h) is not None):
        ts = [r.ts for name in store.list(f"{base}/{hour}")
              for r in _read_file(store, f"{base}/{hour}/{name}", float("-inf"), float("inf"))]
        if ts:
            return min(ts)
    return None


def latest_version(store: Store, model: str) -> str | None:
    """The version that served most recently: the newest record of each version's last hour."""
    best: tuple[float, str] | None = None
    for v in store.list(f"{PREFIX}/{model}"):
        base = f"{PREFIX}/{model}/{v}"
        hours = [h for h in store.list(base) if _hour_start(h) is not None]
        if not hours:
            continue
        last = max(hours)
        ts = max((r.ts for name in store.list(f"{base}/{last}")
                  for r in _read_file(store, f"{base}/{last}/{name}", float("-inf"), float("inf"))), default=None)
        if ts is not None and (best is None or ts > best[0]):
            best = (ts, v)
    return best[1] if best else None

"""Loaded models, hot swap, the alias watcher and the bounded inference pool.

Hot swap: a reload resolves the source, builds a new session *beside* the serving one, warms
it up and checks its output against its metadata and task, then replaces one reference under
a lock. A request takes the reference once at its start, so requests already running finish
on the old session (it is freed when the last one drops it). A failed load leaves the old
version serving and is recorded in ``last_error`` (shown by ``GET /v1/models``).

The watcher (``--watch``) polls each alias slot with one registry call (nothing downloaded or
hashed while the alias stays put). No error ends it: a failure to reach the registry or to
download, load or warm up a version is recorded on the slot (``last_error``, ``watch_errors``,
``visionloop_watch_errors_total``), logged once per distinct message, and polling goes on, with
backoff while errors last. A version that failed is retried only after ``retry_failed_s`` or
when the alias moves. A slot pinned by a manual reload is left alone until unpinned.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, TypeVar

from ..errors import VisionloopError
from .errors import ApiError, from_visionloop, not_ready, overloaded
from .batching import batching_pays
from .metrics import Metrics
from .runtime import ModelLoadError, OnnxModel, default_threads, first_line
from .schemas import ModelStatus, ReloadResponse
from .sources import ModelSpec, ResolvedSource, current_version, resolve

log = logging.getLogger("visionloop.serving")
T = TypeVar("T")
MAX_BACKOFF_S = 5.0  # the longest pause between polls while errors last (unless --watch is longer)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")  # object addresses would make every message "distinct"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def describe(exc: BaseException) -> str:
    """One line for ``last_error``: our own messages as they are, anything else with its type."""
    if isinstance(exc, ApiError):
        text = exc.message
    elif isinstance(exc, (VisionloopError, ModelLoadError)):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {first_line(exc, 500)}"
    return _ADDRESS.sub("0x...", text)


def backoff(interval: float, failures: int) -> float:
    """Seconds to the next poll: ``interval``, doubling per failed round up to MAX_BACKOFF_S."""
    return min(interval * 2 ** min(failures, 16), max(interval, MAX_BACKOFF_S))


@dataclass(frozen=True)
class RuntimeOptions:
    intra_threads: int | None = None
    spinning: bool = True
    providers: tuple[str, ...] = ()  # serving.providers.resolve_providers; empty: the CPU
    strict_provider: bool = False  # a provider named by --provider must load (auto may fall back)
    max_batch: int = 1  # > 1: micro-batching (serving.batching) for models with a dynamic batch dimension
    max_wait_ms: float = 2.0
    batch_runners: int = 1  # concurrent batched runs per model (the server: --workers-threads)
    batch_adaptive: bool = True  # batch only a model whose batches measure cheaper per image at load

    def session_threads(self) -> int:
        """intra-op threads of one session: --intra-threads, else every CPU this process may use.
        Not CPUs / workers: onnxruntime's intra-op pool belongs to the session and concurrent runs
        share it, so workers do not multiply it. Measured (bench/RESULTS.md, 2 CPUs, 2 workers):
        one request at a time 1.25x faster than with cpus / workers threads, which do 2-12% more
        under load."""
        return self.intra_threads or default_threads(1)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: OnnxModel
    source: ResolvedSource
    loaded_at: str


@dataclass(frozen=True)
class Pin:
    """What a manual reload named; the slot keeps serving it until ``{"unpin": true}``."""

    version: str | None = None
    path: str | None = None


@dataclass
class Slot:
    spec: ModelSpec
    current: LoadedModel | None = None
    state: str = "loading"
    last_error: str | None = None
    last_error_at: str | None = None
    failed_version: str | None = None  # the watcher does not retry a broken version at every poll
    failed_at: float = 0.0  # monotonic
    pin: Pin | None = None
    last_check_at: str | None = None
    watch_errors: int = 0
    logged_error: str | None = None  # the last message logged: each distinct error is logged once
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelManager:
    retry_failed_s = 300.0  # a version that failed to load is tried again after this long

    def __init__(self, specs: list[ModelSpec], options: RuntimeOptions, metrics: Metrics,
                 on_batching: Callable[[int], None] | None = None):
        if not specs:
            raise VisionloopError("no model to serve: pass --model")
        names = [s.name for s in specs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise VisionloopError(f"two models named {sorted(dupes)[0]!r}: rename one with --model NAME=SOURCE")
        self.slots: dict[str, Slot] = {s.name: Slot(s) for s in specs}
        self.default = specs[0].name
        self.options = options
        self.metrics = metrics
        self.on_batching = on_batching  # told max_batch when a model starts batching (the pool grows)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- lookup ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return all(s.current is not None for s in self.slots.values())

    def get(self, name: str | None) -> LoadedModel:
        name = name or self.default
        slot = self.slots.get(name)
        if slot is None:
            raise ApiError(404, "model_not_found", f"unknown model {name!r}; loaded: {', '.join(self.slots)}")
        current = slot.current  # one read: the whole request uses this version
        if current is None:
            self.metrics.rejected.labels("not_ready").inc()
            raise not_ready(f"model {name!r} is {slot.state}" + (f": {slot.last_error}" if slot.last_error else ""))
        return current

    def status(self) -> list[ModelStatus]:
        out = []
        for name, slot in self.slots.items():
            cur = slot.current
            info = cur.model.info if cur else None
            out.append(ModelStatus(
                name=name, default=name == self.default, source=slot.spec.ref, state=slot.state,
                version=cur.version if cur else None, alias=slot.spec.alias,
                task=info.task if info else None, classes=list(info.classes) if info else [],
                input_size=list(info.imgsz) if info else None, providers=cur.model.providers if cur else [],
                precision=info.precision if info else None,
                intra_threads=cur.model.intra_threads if cur else None, max_batch=cur.model.max_batch if cur else None,
                batch_gain=cur.model.batch_gain if cur else None,
                loaded_at=cur.loaded_at if cur else None, last_error=slot.last_error, last_error_at=slot.last_error_at,
                pinned=slot.pin is not None, last_check_at=slot.last_check_at, watch_errors=slot.watch_errors,
            ))
        return out

    # -- loading --------------------------------------------------------------------------
    def _build(self, name: str, source: ResolvedSource) -> LoadedModel:
        o = self.options
        batching = o.max_batch > 1
        model = OnnxModel(source.path, o.session_threads(), o.spinning, list(o.providers) or None, o.strict_provider)
        if batching and not model.info.dynamic_batch:
            log.warning("model %s: input batch dimension is fixed (%s): serving it unbatched",
                        name, model.info.input_shape[0])
            batching = False
        model.warmup()
        if batching and o.batch_adaptive:
            batching = self._batches_pay(name, model)
        if batching:  # after the warm-up: a model that fails it leaves no runner thread behind
            if self.on_batching is not None:
                self.on_batching(o.max_batch)
            model.start_batching(o.max_batch, o.max_wait_ms, self.metrics.batch_size.labels(name).observe,
                                 f"vl-batch-{name}", o.batch_runners)
        return LoadedModel(name, source.version, model, source, _now())

    def _batches_pay(self, name: str, model: OnnxModel) -> bool:
        """--batch-policy adaptive: time the model's batches against single runs (logged when not)."""
        o = self.options
        try:
            gain = model.measure_batching(o.max_batch, o.batch_runners)
        except Exception as exc:  # onnxruntime's own error types: the model runs single images only
            log.warning("model %s: a batch of %d failed (%s: %s): serving unbatched", name, o.max_batch,
                        type(exc).__name__, first_line(exc))
            return False
        if not batching_pays(gain):
            log.info("model %s: batches of %d measured %.2fx the images/s of single runs (%d at once): serving "
                     "unbatched (--batch-policy always batches anyway)", name, o.max_batch, gain, o.batch_runners)
            return False
        return True

    def _record(self, slot: Slot, message: str) -> None:
        slot.last_error, slot.last_error_at = message, _now()
        if message != slot.logged_error:
            slot.logged_error = message
            log.error("model %s: %s", slot.spec.name, message)

    def _fail(self, slot: Slot, message: str, version: str | None) -> None:
        self._record(slot, message)
        if version is not None:
            slot.failed_version, slot.failed_at = version, time.monotonic()
        if slot.current is None:
            slot.state = "failed"
        self.metrics.load_failures.labels(slot.spec.name).inc()

    def _install(self, slot: Slot, new: LoadedModel) -> None:
        old = slot.current
        if old is not None and old.model.info.task != new.model.info.task:
            raise ModelLoadError(f"task changed from {old.model.info.task} to {new.model.info.task}; "
                                 "serve it under another name")
        slot.current = new  # the swap: one reference assignment
        slot.state, slot.last_error, slot.last_error_at, slot.failed_version = "ready", None, None, None
        slot.logged_error = None
        self.metrics.set_model(slot.spec.name, new.version, new.model.info.task, slot.spec.alias)
        if old is not None:
            old.model.close()  # its requests still running finish unbatched; then it is freed
            self.metrics.swaps.labels(slot.spec.name).inc()
            log.info("model %s: swapped %s -> %s", slot.spec.name, old.version, new.version)

    def _load(self, slot: Slot, version: str | None = None, path: str | None = None) -> ReloadResponse:
        """Resolve, build, warm up and swap (the caller holds ``slot.lock``). Any failure is
        recorded on the slot and raised as an ApiError; the old version keeps serving."""
        name = slot.spec.name
        previous = slot.current.version if slot.current else None
        try:
            source = resolve(slot.spec, version, path)
        except VisionloopError as exc:
            self._fail(slot, str(exc), None)
            raise from_visionloop(exc) from None
        except Exception as exc:  # MLflow, network, OSError: the registry or store is not answering
            self._fail(slot, describe(exc), None)
            raise ApiError(503, "source_unavailable", f"{describe(exc)}; still serving version {previous}",
                           {"Retry-After": "5"}) from None
        if slot.current is not None and source.version == previous and source.path == slot.current.source.path:
            return ReloadResponse(name=name, previous_version=previous, version=previous, swapped=False)
        old_classes = slot.current.model.info.classes if slot.current else None
        new: LoadedModel | None = None
        try:
            new = self._build(name, source)
            self._install(slot, new)
        except Exception as exc:  # onnxruntime, odd metadata, a bad output: never the serving version's problem
            if new is not None:  # built but refused (another task): stop its batcher
                new.model.close()
            self._fail(slot, describe(exc), source.version)
            raise ApiError(409, "reload_failed", f"{describe(exc)}; still serving version {previous}") from None
        changed = old_classes is not None and old_classes != slot.current.model.info.classes
        if changed:  # legitimate for a retrained model, but clients keyed on class ids should know
            log.warning("model %s: version %s names different classes than %s", name, source.version, previous)
        return ReloadResponse(name=name, previous_version=previous, version=source.version, swapped=True,
                              classes_changed=changed)

    def load_all(self) -> None:
        """Initial load of every slot (run in a thread at startup; /ready turns 200 at the end)."""
        for slot in self.slots.values():
            with slot.lock:
                try:
                    self._load(slot)
                except ApiError:
                    pass  # recorded on the slot; a watcher retries alias slots
                except Exception as exc:  # a bug: report it, load the other models
                    log.exception("loading %s failed", slot.spec.name)
                    self._fail(slot, describe(exc), None)

    def reload(self, name: str, version: str | None = None, path: str | None = None,
               unpin: bool = False) -> ReloadResponse:
        """Load ``version`` or ``path`` and pin the slot to it, or re-resolve the source (a pinned
        slot: what it is pinned to); ``unpin`` releases the pin and re-resolves the alias."""
        slot = self.slots.get(name)
        if slot is None:
            raise ApiError(404, "model_not_found", f"unknown model {name!r}")
        if unpin and (version or path):
            raise ApiError(422, "bad_parameter", "unpin takes no version or path")
        pin = Pin(version, path) if version or path else None
        with slot.lock:
            if unpin and slot.pin is not None:
                slot.pin = None
                log.info("model %s: unpinned, following %s again", name, slot.spec.ref)
            target = pin or slot.pin or Pin()
            response = self._load(slot, target.version, target.path)
            if pin is not None:
                slot.pin = pin
                log.info("model %s: pinned to %s", name, version or path)
            return response.model_copy(update={"pinned": slot.pin is not None})

    # -- alias watcher --------------------------------------------------------------------
    def watched(self) -> list[Slot]:
        """The slots that follow an alias (``M@champion``): what ``--watch`` polls."""
        return [s for s in self.slots.values() if s.spec.kind == "registry" and s.spec.alias]

    def start_watch(self, interval: float) -> None:
        if not self.watched() or interval <= 0:
            return
        self._watcher = threading.Thread(target=self._watch, args=(interval,), name="vl-watch", daemon=True)
        self._watcher.start()

    def _watch(self, interval: float) -> None:
        failures = 0
        while not self._stop.wait(backoff(interval, failures)):
            try:
                failures = 0 if self.poll() else failures + 1
            except Exception as exc:  # a bug in the round itself must not end hot swap for good
                failures += 1
                for slot in self.watched():
                    self._watch_error(slot, exc)

    def poll(self) -> bool:
        """One watcher round over the alias slots; False when any of them met an error."""
        ok = True
        for slot in self.watched():
            ok = self._poll_slot(slot) and ok
        return ok

    def _poll_slot(self, slot: Slot) -> bool:
        slot.last_check_at = _now()
        if slot.pin is not None:
            return True
        try:
            target = current_version(slot.spec)  # one registry call; nothing downloaded or hashed
            cur = slot.current
            if cur is not None and target == cur.version:
                slot.logged_error = None  # reachable again: the next failure is news, log it
                return True
            if target == slot.failed_version and time.monotonic() - slot.failed_at < self.retry_failed_s:
                return True  # known broken, recorded already; wait for the alias to move
            with slot.lock:
                if slot.pin is None:  # a manual pin may have come in meanwhile
                    self._load(slot)
            return True
        except Exception as exc:
            self._watch_error(slot, exc)
            return False

    def _watch_error(self, slot: Slot, exc: Exception) -> None:
        slot.watch_errors += 1
        self.metrics.watch_errors.labels(slot.spec.name).inc()
        if not isinstance(exc, ApiError):  # an ApiError from _load is recorded already
            self._record(slot, describe(exc))

    def stop(self) -> None:
        self._stop.set()
        for slot in self.slots.values():
            if slot.current is not None:
                slot.current.model.close()


class InferencePool:
    """A thread pool with a bounded number of queued + running jobs (503 when full).

    It starts with one thread per worker and grows (:meth:`grow`) only when a model really
    batches, since each request of a batch holds a thread while it waits: threads beyond the
    workers, each running its own session run, would only make the requests fight over the cores."""

    def __init__(self, workers: int, limit: int, metrics: Metrics):
        self.workers = max(1, workers)
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vl-infer")
        self._grow = threading.Lock()
        self.limit = max(1, limit)
        self.pending = 0  # only touched on the event loop thread
        self.metrics = metrics

    async def run(self, fn: Callable[..., T], *args) -> T:
        if self.pending >= self.limit:
            self.metrics.rejected.labels("queue_full").inc()
            raise overloaded(f"server busy: {self.pending} requests queued (limit {self.limit}); retry shortly")
        self.pending += 1
        self.metrics.queue_depth.set(self.pending)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.pending -= 1
            self.metrics.queue_depth.set(self.pending)

    def grow(self, workers: int) -> None:
        """At least ``workers`` threads from now on; jobs already handed to the old pool still run."""
        with self._grow:
            if workers <= self.workers:
                return
            old, self.workers = self.executor, workers
            self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vl-infer")
        old.shutdown(wait=False)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


"""Loaded models, hot swap and the bounded inference pool.

Hot swap: a reload resolves the source, builds a new session *beside* the serving one, warms
it up and checks its output against its metadata and task, then replaces one reference under
a lock. A request takes the reference once at its start, so requests already running finish
on the old session (it is freed when the last one drops it). A failed load leaves the old
version serving and is recorded in ``last_error`` (shown by ``GET /v1/models``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, TypeVar

from ..errors import VisionloopError
from .errors import ApiError, from_visionloop, not_ready, overloaded
from .metrics import Metrics
from .runtime import ModelLoadError, OnnxModel
from .schemas import ModelStatus, ReloadResponse
from .sources import ModelSpec, ResolvedSource, resolve

log = logging.getLogger("visionloop.serving")
T = TypeVar("T")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RuntimeOptions:
    intra_threads: int | None = None
    spinning: bool = True


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    model: OnnxModel
    source: ResolvedSource
    loaded_at: str


@dataclass
class Slot:
    spec: ModelSpec
    current: LoadedModel | None = None
    state: str = "loading"
    last_error: str | None = None
    last_error_at: str | None = None
    failed_version: str | None = None  # the watcher does not retry the same broken version forever
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelManager:
    def __init__(self, specs: list[ModelSpec], options: RuntimeOptions, metrics: Metrics):
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
                loaded_at=cur.loaded_at if cur else None, last_error=slot.last_error, last_error_at=slot.last_error_at,
            ))
        return out

    # -- loading --------------------------------------------------------------------------
    def _build(self, name: str, source: ResolvedSource) -> LoadedModel:
        model = OnnxModel(source.path, self.options.intra_threads, self.options.spinning)
        model.warmup()
        return LoadedModel(name, source.version, model, source, _now())

    def _fail(self, slot: Slot, message: str, version: str | None) -> None:
        slot.last_error, slot.last_error_at, slot.failed_version = message, _now(), version
        if slot.current is None:
            slot.state = "failed"
        self.metrics.load_failures.labels(slot.spec.name).inc()
        log.error("model %s: %s", slot.spec.name, message)

    def _install(self, slot: Slot, new: LoadedModel) -> None:
        old = slot.current
        if old is not None and old.model.info.task != new.model.info.task:
            raise ModelLoadError(f"task changed from {old.model.info.task} to {new.model.info.task}; "
                                 "serve it under another name")
        slot.current = new  # the swap: one reference assignment
        slot.state, slot.last_error, slot.last_error_at, slot.failed_version = "ready", None, None, None
        self.metrics.set_model(slot.spec.name, new.version, new.model.info.task, slot.spec.alias)
        if old is not None:
            self.metrics.swaps.labels(slot.spec.name).inc()
            log.info("model %s: swapped %s -> %s", slot.spec.name, old.version, new.version)

    def load_all(self) -> None:
        """Initial load of every slot (run in a thread at startup; /ready turns 200 at the end)."""
        for name, slot in self.slots.items():
            with slot.lock:
                try:
                    self._install(slot, self._build(name, resolve(slot.spec)))
                except (VisionloopError, ModelLoadError) as exc:
                    self._fail(slot, str(exc), None)
                except Exception as exc:  # a bug or an unexpected library error: report, keep going
                    log.exception("loading %s failed", name)
                    self._fail(slot, f"{type(exc).__name__}: {exc}", None)

    def reload(self, name: str, version: str | None = None, path: str | None = None) -> ReloadResponse:
        """Load a version (or re-resolve the source) and swap it in; the old one serves on failure."""
        slot = self.slots.get(name)
        if slot is None:
            raise ApiError(404, "model_not_found", f"unknown model {name!r}")
        with slot.lock:
            previous = slot.current.version if slot.current else None
            try:
                source = resolve(slot.spec, version, path)
            except VisionloopError as exc:
                self._fail(slot, str(exc), None)
                raise from_visionloop(exc) from None
            if slot.current is not None and source.version == previous and source.path == slot.current.source.path:
                return ReloadResponse(name=name, previous_version=previous, version=previous, swapped=False)
            old_classes = slot.current.model.info.classes if slot.current else None
            try:
                self._install(slot, self._build(name, source))
            except (VisionloopError, ModelLoadError) as exc:
                self._fail(slot, str(exc), source.version)
                raise ApiError(409, "reload_failed", f"{exc}; still serving version {previous}") from None
            changed = old_classes is not None and old_classes != slot.current.model.info.classes
            if changed:  # legitimate for a retrained model, but clients keyed on class ids should know
                log.warning("model %s: version %s names different classes than %s", name, source.version, previous)
            return ReloadResponse(name=name, previous_version=previous, version=source.version, swapped=True,
                                  classes_changed=changed)

    # -- alias watcher --------------------------------------------------------------------
    def start_watch(self, interval: float) -> None:
        watched = [s for s in self.slots.values() if s.spec.kind == "registry"]
        if not watched or interval <= 0:
            return
        self._watcher = threading.Thread(target=self._watch, args=(watched, interval), name="vl-watch", daemon=True)
        self._watcher.start()

    def _watch(self, slots: list[Slot], interval: float) -> None:
        while not self._stop.wait(interval):
            for slot in slots:
                try:
                    target = resolve(slot.spec)
                except Exception as exc:  # the registry may be briefly unreachable: keep serving
                    log.warning("watch %s: %s", slot.spec.name, exc)
                    continue
                cur = slot.current
                if (cur is None or target.version != cur.version) and target.version != slot.failed_version:
                    try:
                        self.reload(slot.spec.name)
                    except ApiError as exc:
                        log.warning("watch %s: %s", slot.spec.name, exc.message)

    def stop(self) -> None:
        self._stop.set()


class InferencePool:
    """A fixed thread pool with a bounded number of queued + running jobs (503 when full)."""

    def __init__(self, workers: int, limit: int, metrics: Metrics):
        self.executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="vl-infer")
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

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


"""`visionloop loop --watch`: iterations, unattended, for as long as it runs.

An iteration starts when enough new labels wait (labeled but in no dataset version yet: in
Label Studio, or in the capture inbox), when ``monitoring.drift.monitor`` says "drift" for the
served version, or on a schedule. A failed iteration (or a failed check) is reported, counted
and retried later with exponential backoff; it never ends the watch. What triggers an
iteration is read from the data each time, never kept in memory, so a restarted watcher picks
up where the last one stopped; :func:`.iteration.run_iteration` is itself resumable.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from ..errors import ValidationError
from .iteration import LoopOptions, LoopResult, Step, run_iteration

if TYPE_CHECKING:
    from ..store import Store
    from ..training.events import PipelineEvents

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str = "duration") -> float:
    """'30s', '5m', '6h', '1d' (or plain seconds) → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise ValidationError(f"{flag} {text!r}: use a positive number with s, m, h or d (e.g. 30s, 6h)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


class WatchOptions(BaseModel):
    min_labels: int = Field(default=10, ge=0, description="New labels that start an iteration (0: labels never do).")
    every: float | None = Field(default=None, gt=0, description="Seconds between scheduled iterations.")
    poll: float = Field(default=30.0, gt=0, description="Seconds between checks.")
    drift: bool = Field(default=True, description="Start an iteration when monitor reports drift.")
    drift_window: float = Field(default=86400.0, gt=0, description="monitor's --since, in seconds.")
    drift_cooldown: float = Field(default=3600.0, ge=0, description="Seconds before drift may start another one.")
    backoff: float = Field(default=60.0, gt=0, description="First wait after a failure; doubles per failure.")
    max_backoff: float = Field(default=3600.0, gt=0)
    max_iterations: int | None = Field(default=None, ge=1, description="Stop after this many (tests).")


EventKind = Literal["watching", "trigger", "done", "failed", "check_failed", "stopped"]


class WatchEvent(BaseModel):
    kind: EventKind
    detail: str
    iteration: int = 0


class IterationOutcome(BaseModel):
    iteration: int
    trigger: str
    status: Literal["promoted", "refused", "no_change", "failed"]
    detail: str
    result: LoopResult | None = None


class WatchResult(BaseModel):
    outcomes: list[IterationOutcome] = Field(default_factory=list)
    checks_failed: int = 0
    stopped: str = ""

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def waiting_labels(store: Store, opts: LoopOptions) -> int:
    """Labels that no dataset version holds yet (what the next iteration would pull)."""
    from ..datasets.catalog import Catalog
    from ..feedback import relabel

    if not opts.labelstudio.url:
        return len(relabel.labeled_captures(store, opts.capture_model or opts.model))
    from ..feedback import labelstudio as ls

    manifest = Catalog(store).load(opts.data)
    with ls.LabelStudio(opts.labelstudio.url, ls.resolve_token(opts.token)) as client:
        proj = client.find_project(opts.labelstudio.project)
        if proj is None:
            return 0
        items, _ = ls.annotated_images(store, client.export_annotated(int(proj["id"])), manifest.task)
    have = {i.sha256 for i in manifest.images}
    return sum(1 for it in items if it.sha256 not in have)


def drift_verdict(store: Store, model: str, window: float) -> str:
    from ..monitoring.drift import monitor

    return monitor(store, model, since=timedelta(seconds=window)).verdict


def _outcome(n: int, trigger: str, res: LoopResult) -> IterationOutcome:
    if res.promotion is not None:
        summary = res.promotion.decision.summary() if res.promotion.decision else ""
        status = "promoted" if res.promoted else "refused"
        return IterationOutcome(iteration=n, trigger=trigger, status=status, result=res,
                                detail=f"{res.trained}: {'promoted' if res.promoted else 'refused'} ({summary})")
    return IterationOutcome(iteration=n, trigger=trigger, status="no_change", result=res,
                            detail=f"champion {res.champion_after or '-'}; {res.steps[-1].detail if res.steps else ''}")


class Watcher:
    """Runs iterations as the triggers say until :meth:`request_stop` or ``max_iterations``."""

    def __init__(self, opts: LoopOptions, wopts: WatchOptions, *, say: Callable[[Step], None] = lambda s: None,
                 on_event: Callable[[WatchEvent], None] = lambda e: None, training: PipelineEvents | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.opts, self.wopts = opts, wopts
        self.say, self.on_event, self.training, self.clock = say, on_event, training, clock
        self.busy = False  # inside an iteration (a stop request then abandons the current step)
        self._stop = threading.Event()
        self._last_run = self._last_drift = float("-inf")

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _emit(self, kind: EventKind, detail: str, n: int = 0) -> None:
        self.on_event(WatchEvent(kind=kind, detail=detail, iteration=n))

    def _trigger(self, store: Store, now: float) -> str | None:
        w = self.wopts
        if w.min_labels:
            n = waiting_labels(store, self.opts)
            if n >= w.min_labels:
                return f"{n} new labels (>= --min-labels {w.min_labels})"
        if w.drift and now - self._last_drift >= w.drift_cooldown:
            if drift_verdict(store, self.opts.model, w.drift_window) == "drift":
                self._last_drift = now
                return f"monitor reports drift for {self.opts.model}"
        if w.every and now - self._last_run >= w.every:
            return f"schedule (every {w.every:g} s)"
        return None

    def run(self) -> WatchResult:
        from ..store import open_store

        w, out = self.wopts, WatchResult()
        self._last_run = self.clock()  # the schedule counts from the start
        retry_at: float | None = None
        failures = 0
        self._emit("watching", f"{self.opts.model} on {self.opts.data}: min-labels {w.min_labels}, drift "
                               f"{'on' if w.drift else 'off'}, every {w.every or '-'} s, poll {w.poll:g} s")
        while not self.stopping and (w.max_iterations is None or len(out.outcomes) < w.max_iterations):
            now = self.clock()
            try:
                trigger = (f"retry after {failures} failure(s)" if now >= retry_at else None) if retry_at is not None \
                    else self._trigger(open_store(), now)
            except Exception as exc:  # a check that failed (Label Studio down, ...) is retried next poll
                out.checks_failed += 1
                self._emit("check_failed", f"{type(exc).__name__}: {exc}")
                trigger = None
            if trigger is None:
                self._stop.wait(min(w.poll, max(0.05, retry_at - now)) if retry_at is not None else w.poll)
                continue
            n = len(out.outcomes) + 1
            self._emit("trigger", trigger, n)
            self._last_run = now
            self.busy = True
            try:
                res = run_iteration(self.opts, self.say, self.training)
            except Exception as exc:  # never ends the watch: counted, reported, retried with backoff
                failures += 1
                delay = min(w.max_backoff, w.backoff * 2 ** (failures - 1))
                retry_at = self.clock() + delay
                out.outcomes.append(IterationOutcome(iteration=n, trigger=trigger, status="failed", detail=str(exc)))
                self._emit("failed", f"{exc} (failure {failures}; retry in {delay:g} s)", n)
                continue
            finally:
                self.busy = False
            failures, retry_at = 0, None
            oc = _outcome(n, trigger, res)
            out.outcomes.append(oc)
            self._emit("done", oc.detail, n)
        out.stopped = "stop requested" if self.stopping else f"--max-iterations {w.max_iterations} reached"
        self._emit("stopped", out.stopped, len(out.outcomes))
        return out


@contextmanager
def stop_on_signals(watcher: Watcher | None = None) -> Iterator[None]:
    """SIGTERM and SIGINT: between iterations, stop cleanly (the watch returns); inside one,
    abandon the current step by raising KeyboardInterrupt (every step is atomic; a training in
    progress is marked KILLED in MLflow). Without a watcher (a plain ``loop``) always the latter."""

    def handler(signum, frame):
        if watcher is not None:
            watcher.request_stop()
            if not watcher.busy:
                return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)

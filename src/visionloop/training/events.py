"""How the training pipeline reports progress, without knowing who listens.

The pipeline calls a :class:`PipelineEvents`; the CLI renders the calls with rich (step lines,
a spinner, the epoch bar: ``cli/progress.py``), library callers get :class:`LogEvents` (the
``visionloop.training`` logger) or :class:`NullEvents`. :class:`StepTimer` times the steps and
sends the events, so a step body only does its work and sets a one-line detail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

from .trainer import EpochMetrics

log = logging.getLogger("visionloop.training")
StepStatus = Literal["done", "cached"]


@dataclass
class StepRecord:
    name: str
    status: StepStatus
    seconds: float
    detail: str = ""


class PipelineEvents(Protocol):
    def step_started(self, name: str, cached: bool) -> None: ...

    def step_done(self, rec: StepRecord) -> None: ...

    def step_failed(self, name: str) -> None: ...

    def train_started(self, epochs: int) -> None: ...

    def epoch(self, em: EpochMetrics) -> None: ...

    def batch(self, epoch: int, batch: int, batches: int) -> None: ...

    def message(self, text: str) -> None: ...


class NullEvents:
    """Listens to nothing; subclass it to hear only some events."""

    def step_started(self, name: str, cached: bool) -> None:
        pass

    def step_done(self, rec: StepRecord) -> None:
        pass

    def step_failed(self, name: str) -> None:
        pass

    def train_started(self, epochs: int) -> None:
        pass

    def epoch(self, em: EpochMetrics) -> None:
        pass

    def batch(self, epoch: int, batch: int, batches: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass


class LogEvents(NullEvents):
    """Steps, epochs and messages as INFO records of the ``visionloop.training`` logger."""

    def step_done(self, rec: StepRecord) -> None:
        how = "cached" if rec.status == "cached" else f"done in {rec.seconds:.1f}s"
        log.info("%s: %s%s", rec.name, how, f" — {rec.detail}" if rec.detail else "")

    def epoch(self, em: EpochMetrics) -> None:
        key = "metrics/accuracy_top1" if "metrics/accuracy_top1" in em.metrics else "metrics/mAP50-95"
        log.info("epoch %d/%d: %s %s", em.epoch, em.epochs, key.split("/")[-1], em.metrics.get(key))

    def message(self, text: str) -> None:
        log.info("%s", text)


class StepTimer:
    """Times steps, keeps their records in order and reports each to ``events``."""

    def __init__(self, events: PipelineEvents):
        self.events = events
        self.records: list[StepRecord] = []

    @contextmanager
    def step(self, name: str, cached: bool = False) -> Iterator[StepRecord]:
        rec = StepRecord(name, "cached" if cached else "done", 0.0)
        self.events.step_started(name, cached)
        t0 = time.perf_counter()
        try:
            yield rec
        except BaseException:
            self.events.step_failed(name)
            raise
        rec.seconds = time.perf_counter() - t0
        self.records.append(rec)
        self.events.step_done(rec)

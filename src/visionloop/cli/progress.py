"""The training pipeline's progress drawn with rich on stderr.

One line per step (``✓ train: done in 12.3s — detail``, or ``cached``), a spinner while a step
runs (terminals only) and one bar over the epochs of the train step.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.status import Status

from ..training.events import NullEvents, StepRecord
from ..training.trainer import EpochMetrics

# the epoch bar's short names for the metrics it shows
BAR_METRICS = {"box": "train/box_loss", "P": "metrics/precision", "R": "metrics/recall",
               "mAP50": "metrics/mAP50", "mAP50-95": "metrics/mAP50-95",  # detection
               "loss": "train/loss", "top1": "metrics/accuracy_top1", "top5": "metrics/accuracy_top5"}  # classify


class EpochBar:
    """One rich bar over epochs; the text shows the batch and the latest epoch's metrics."""

    def __init__(self, console: Console, epochs: int):
        self.progress = Progress(
            TextColumn("[bold]train[/bold]"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False,
        )
        self.task = self.progress.add_task("train", total=epochs, info="starting")
        self.latest = ""

    def on_batch(self, epoch: int, batch: int, batches: int) -> None:
        self.progress.update(self.task, info=f"epoch {epoch} batch {batch}/{batches} {self.latest}")

    def on_epoch(self, em: EpochMetrics) -> None:
        short = {k: em.metrics.get(v) for k, v in BAR_METRICS.items()}
        self.latest = " ".join(f"{k} {v:.3f}" for k, v in short.items() if v is not None)
        self.progress.update(self.task, completed=em.epoch, info=self.latest)


class RichPipelineEvents(NullEvents):
    """:class:`~visionloop.training.events.PipelineEvents` for a terminal (or a CI log)."""

    def __init__(self, console: Console):
        self.console = console
        self.status: Status | None = None
        self.bar: EpochBar | None = None

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
        if self.bar is not None:
            self.bar.progress.stop()
            self.bar = None

    def step_started(self, name: str, cached: bool) -> None:
        if not cached:
            self.status = self.console.status(f"{name}…")
            self.status.start()

    def train_started(self, epochs: int) -> None:
        self._stop()  # the bar replaces the spinner
        self.bar = EpochBar(self.console, epochs)
        self.bar.progress.start()

    def epoch(self, em: EpochMetrics) -> None:
        if self.bar is not None:
            self.bar.on_epoch(em)

    def batch(self, epoch: int, batch: int, batches: int) -> None:
        if self.bar is not None:
            self.bar.on_batch(epoch, batch, batches)

    def step_done(self, rec: StepRecord) -> None:
        self._stop()
        label = "[yellow]cached[/yellow]" if rec.status == "cached" else f"done in {rec.seconds:.1f}s"
        detail = f" — {escape(rec.detail)}" if rec.detail else ""
        self.console.print(f"[green]✓[/green] {rec.name}: {label}{detail}", highlight=False, soft_wrap=True)

    def step_failed(self, name: str) -> None:
        self._stop()

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

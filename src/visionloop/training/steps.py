"""The steps of one training run; each returns a typed result and logs it into the run.

    materialize → train → export (+ parity) → evaluate → register

A step whose typed record is in the work directory (:class:`~.cache.StepCache`) is reported
"cached" and only logs its record into the new run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from .. import __version__
from ..datasets.manifest import DatasetManifest
from ..evaluation import EvalResult
from .cache import StepCache
from .config import TrainConfig
from .events import PipelineEvents, StepRecord, StepTimer
from .export import ExportOutcome
from .tracking import Tracker
from .trainer import TrainOutput

if TYPE_CHECKING:
    from ..registry import ModelVersion

TRAIN_DONE = "train.done"
EXPORT_DONE = "export.done"
EVAL_FILE = "eval.json"
CONFUSION_FILE = "confusion.json"
SUMMARY_METRICS = ("metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95",
                   "metrics/accuracy_top1", "metrics/accuracy_top5")
PARITY_IMAGES = 8
M = TypeVar("M", bound=BaseModel)


@dataclass
class Plan:
    """What a training is, decided before any run exists."""

    manifest: DatasetManifest
    name: str  # the registered model's
    device: str
    batch: int
    params: dict[str, Any]
    code: str
    cache: StepCache
    commit: str | None  # of this code's checkout


@dataclass
class RunContext:
    """What every step of one run needs."""

    cfg: TrainConfig
    plan: Plan
    threads: int  # torch CPU threads; 0 on a GPU
    tracker: Tracker
    timer: StepTimer
    events: PipelineEvents

    @property
    def manifest(self) -> DatasetManifest:
        return self.plan.manifest

    @property
    def cache(self) -> StepCache:
        return self.plan.cache

    @property
    def task(self) -> str:
        return self.plan.manifest.task


@contextmanager
def _step(ctx: RunContext, name: str, marker: str, model: type[M]) -> Iterator[tuple[StepRecord, M | None]]:
    """Time step ``name``; yields its record and its cached result (None: do the work)."""
    cached = ctx.cache.has(marker)
    with ctx.timer.step(name, cached=cached) as st:
        yield st, ctx.cache.load(marker, model) if cached else None


def materialize_step(ctx: RunContext, cache_dir: Path) -> Path:
    from ..datasets.materialize import materialize
    from ..store import open_store

    with ctx.timer.step("materialize") as st:
        data_yaml = materialize(open_store(), ctx.manifest, cache_dir)
        st.detail = str(data_yaml.parent)
    return data_yaml


def train_step(ctx: RunContext, data_yaml: Path) -> TrainOutput:
    from . import trainer

    with _step(ctx, "train", TRAIN_DONE, TrainOutput) as (st, out):
        if out is not None:
            history = trainer.read_results_csv(out.save_dir / "results.csv", ctx.cfg.epochs)
            for em in history:  # replay the per-epoch curves into this run
                ctx.tracker.metrics(em.metrics, step=em.epoch)
            st.detail = f"{len(history)} epochs from {out.save_dir}"
        else:
            ctx.cache.fresh()
            ctx.events.train_started(ctx.cfg.epochs)

            def on_epoch(em: trainer.EpochMetrics) -> None:
                ctx.tracker.metrics(em.metrics, step=em.epoch)
                ctx.events.epoch(em)

            out = trainer.train(ctx.cfg, data_yaml, ctx.cache.dir, task=ctx.task, device=ctx.plan.device,
                                batch=ctx.plan.batch, on_epoch=on_epoch, on_batch=ctx.events.batch,
                                threads=ctx.threads or None)
            ctx.cache.save(TRAIN_DONE, out)
            cpu = f", {ctx.threads} torch threads" if ctx.threads else ""
            st.detail = f"{out.epochs_run} epochs{cpu}; log: {out.log_file}"
        if out.transfer is not None:
            st.detail += f"; {out.transfer.summary()}"
    if out.transfer is not None:
        ctx.tracker.params(out.transfer.mlflow_params())
        ctx.events.message(out.transfer.summary())
    _log_training(ctx.tracker, out)
    return out


def _log_training(tracker: Tracker, out: TrainOutput) -> None:
    from .trainer import PLOT_SUFFIXES

    final = {f"best/{k.split('/')[-1]}": v for k, v in out.final_metrics.items() if k in SUMMARY_METRICS}
    tracker.metrics(final)
    for p in sorted(out.save_dir.iterdir()):
        if p.suffix in PLOT_SUFFIXES:
            tracker.artifact(p, "plots")
    for p in (out.save_dir / "results.csv", out.save_dir / "args.yaml", out.log_file):
        if p.exists():
            tracker.artifact(p, "train")
    tracker.artifact(out.best_pt, "weights")


def sample_images(data_yaml: Path, n: int = PARITY_IMAGES, task: str = "detect") -> list[Path]:
    """Up to ``n`` images for the parity check: the test split first, then val, then train
    (classification: taken in turn from each class folder)."""
    if task == "classify":
        return _classify_sample(data_yaml, n)
    root = data_yaml.parent / "images"
    for split in ("test", "val", "train"):
        d = root / split
        if d.is_dir():
            files = sorted(p for p in d.iterdir() if p.is_file())
            if files:
                return files[:n]
    return []


def _classify_sample(data_yaml: Path, n: int) -> list[Path]:
    from ..errors import ValidationError
    from .evaluate import split_files

    for split in ("test", "val", "train"):
        try:
            found = split_files(data_yaml, split)
        except ValidationError:  # no such split, or no images in it
            continue
        by_class = [[f for f, c in zip(found.files, found.labels) if c == k] for k in sorted(set(found.labels))]
        return [f for group in zip_longest(*by_class) for f in group if f is not None][:n]
    return []


def export_step(ctx: RunContext, data_yaml: Path, trained: TrainOutput) -> ExportOutcome:
    from . import export, trainer

    with _step(ctx, "export", EXPORT_DONE, ExportOutcome) as (st, out):
        if out is None:
            onnx = ctx.cache.path("model.onnx")
            m = ctx.manifest  # not the model name: a cached export is reused under any --name
            meta = {"dataset": m.ref, "manifest_hash": m.content_hash, "visionloop_version": __version__}
            with trainer.ultralytics_output(trained.log_file, ctx.cfg.verbose), \
                    trainer.torch_threads(ctx.threads or 1):
                ex = export.export_onnx(trained.best_pt, ctx.cfg.imgsz, onnx, meta)
                rep = export.check_parity(trained.best_pt, onnx, sample_images(data_yaml, task=ctx.task),
                                          ctx.cfg.imgsz, task=ctx.task)
            export.require_parity(rep)
            out = ExportOutcome(onnx=onnx, opset=ex.opset, parity=rep)
            ctx.cache.save(EXPORT_DONE, out)
        st.detail = out.summary()
    p = out.parity
    if p.task == "classify":
        ctx.tracker.metrics({"parity/max_prob_diff": p.max_conf_diff, "parity/images": p.compared})
    else:
        ctx.tracker.metrics({"parity/min_iou": p.min_iou, "parity/max_conf_diff": p.max_conf_diff,
                             "parity/boxes": p.compared})
    ctx.tracker.artifact(ctx.cache.save("parity.json", out), "export")
    ctx.tracker.artifact(out.onnx, "export")
    return out


def eval_split(manifest: DatasetManifest) -> str:
    return "test" if manifest.by_split("test") else "val" if manifest.by_split("val") else "train"


class ConfusionMatrix(BaseModel):
    """The test split's confusion matrix by the served path: ``counts[true][predicted top-1]``."""

    classes: list[str]
    split: str
    counts: list[list[int]]


def evaluate_step(ctx: RunContext, data_yaml: Path, exported: ExportOutcome, log_file: Path) -> EvalResult:
    from .evaluate import confusion_matrix, run_evaluation

    with _step(ctx, "evaluate", EVAL_FILE, EvalResult) as (st, ev):
        if ev is None:
            evaluation = run_evaluation(exported.onnx, data_yaml, eval_split(ctx.manifest), imgsz=ctx.cfg.imgsz,
                                        log_file=log_file)
            ev = evaluation.result
            if ev.task == "classify":  # saved before eval.json: a cached evaluate step has both
                ctx.cache.save(CONFUSION_FILE, ConfusionMatrix(
                    classes=list(ctx.manifest.classes), split=ev.split,
                    counts=confusion_matrix(evaluation.stats).tolist()))  # type: ignore[arg-type]
            ctx.cache.save(EVAL_FILE, ev)
        ev = ev.model_copy(update={"data": ctx.manifest.ref})
        if ev.task == "classify":
            st.detail = f"{ev.split} split ({ev.images} images): top-1 {ev.top1:.3f}, top-5 {ev.top5:.3f}"
        else:
            st.detail = (f"{ev.split} split ({ev.images} images): mAP50 {ev.map50:.3f}, "
                         f"mAP50-95 {ev.map50_95:.3f}, P {ev.precision:.3f}, R {ev.recall:.3f}")
    ctx.tracker.metrics(ev.mlflow_metrics())
    ctx.tracker.artifact(ctx.cache.path(EVAL_FILE), "eval")
    if ctx.cache.has(CONFUSION_FILE):
        ctx.tracker.artifact(ctx.cache.path(CONFUSION_FILE), "eval")
    return ev


def register_step(ctx: RunContext, ev: EvalResult, exported: ExportOutcome) -> ModelVersion:
    """A new version of the plan's model carrying its model card; returns the registry's version."""
    from .. import registry
    from ..registry import ModelCard

    cfg, m = ctx.cfg, ctx.manifest
    with ctx.timer.step("register") as st:
        card = ModelCard(task=m.task, classes=list(m.classes), imgsz=cfg.imgsz, dataset=m.ref,
                         manifest_hash=m.content_hash, cache_key=ctx.cache.key, base_model=cfg.model,
                         epochs=cfg.epochs, git_commit=ctx.plan.commit, eval=ev, parity=exported.parity.card_summary())
        mv = registry.register_version(ctx.plan.name, ctx.tracker.run_id, exported.onnx, card, tags=None,
                                       description=f"{cfg.model} on {m.ref}, {cfg.epochs} epochs")
        st.detail = f"{mv.ref} (aliases: {', '.join(mv.aliases) or 'none'})"
    ctx.tracker.tags({"visionloop.registered": mv.ref})
    return mv

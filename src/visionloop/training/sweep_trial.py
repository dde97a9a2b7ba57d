"""One ``visionloop sweep`` trial, in a Ray worker: the training pipeline's own steps (no
register step) in an MLflow child run, each epoch's validation metric reported to Tune (ASHA
decides there), the test metric in the final report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from ..settings import get_settings
from . import steps
from .cache import StepCache, cache_key
from .config import TrainConfig
from .events import NullEvents, PipelineEvents
from .pipeline import Pipeline, PipelineResult
from .steps import Plan
from .sweep_spec import (EPOCH_METRIC, PARENT_RUN_TAG, TAG_STOPPED, TAG_SWEEP, TAG_TRIAL_ID, VAL_METRIC, TrialPoint,
                         TrialSpec, point_of, trial_config)
from .tracking import Tracker, package_versions
from .trainer import EpochMetrics


class _TuneEvents(NullEvents):
    """Epochs before the last go to ``tune.report`` (ASHA decides there); the last one is
    reported with the test metric once the trial's export and evaluation are done."""

    def __init__(self, epochs: int, key: str):
        self.epochs, self.key = epochs, key
        self.last: float | None = None

    def epoch(self, em: EpochMetrics) -> None:
        from ray import tune

        if self.key not in em.metrics:
            return
        self.last = em.metrics[self.key]
        if em.epoch < self.epochs:
            tune.report({"epoch": em.epoch, VAL_METRIC: self.last})


class TrialPipeline(Pipeline):
    """The training pipeline without its register step, with lr0/optimizer in the cache key,
    in a child run; registration is the sweep's, for the best trial only."""

    def __init__(self, cfg: TrainConfig, point: TrialPoint, spec: TrialSpec, events: PipelineEvents,
                 tags: dict[str, str] | None = None):
        super().__init__(cfg, events)
        self.point, self.spec, self.tags = point, spec, tags or {}
        self.tracker: Tracker | None = None

    def _plan(self) -> Plan:
        plan = super()._plan()
        params = {**plan.params, "lr0": self.point.lr0, "optimizer": self.spec.optimizer}
        return replace(plan, params=params,
                       cache=StepCache(self.settings.cache_dir, cache_key(plan.manifest, params, plan.code)))

    def _registered_hit(self, plan: Plan):
        return None  # a trial is never "already registered": the sweep registers

    def _start_run(self, tracker: Tracker, plan: Plan) -> str:
        """The pipeline's own run start, named after the grid point and tagged as the parent's child."""
        self.tracker = tracker
        start = tracker.start
        tracker.start = lambda _name, tags: start(self.point.label(), {**tags, **self.tags})  # type: ignore[method-assign]
        return super()._start_run(tracker, plan)

    def _steps(self, tracker: Tracker, plan: Plan) -> PipelineResult:
        cfg, m = self.cfg, plan.manifest
        threads = cfg.resolved_threads() if plan.device == "cpu" else 0
        tracker.params({**plan.params, "data": m.ref, "task": m.task, "name": plan.name, "imgsz": cfg.imgsz,
                        "engine": "ray-tune", "threads": threads or "-", "sweep.parent": self.spec.parent_run_id})
        tracker.tags({f"version.{k}": v for k, v in package_versions().items()})
        ctx = steps.RunContext(cfg, plan, threads, tracker, self.timer, self.events)
        data_yaml = steps.materialize_step(ctx, self.settings.cache_dir)
        with hyperparameters(self.point.lr0, self.spec.optimizer):
            trained = steps.train_step(ctx, data_yaml)
        exported = steps.export_step(ctx, data_yaml, trained)
        ev = steps.evaluate_step(ctx, data_yaml, exported, trained.log_file)
        return PipelineResult(plan.name, None, tracker.run_id, False, m.ref, plan.cache.key, plan.params, ev,
                              steps=self.timer.records, artifacts={"onnx": str(exported.onnx)})


@contextmanager
def hyperparameters(lr0: float, optimizer: str) -> Iterator[None]:
    """Set ``lr0`` and the optimizer on every ultralytics trainer made meanwhile (in this process).

    :func:`.trainer.train` passes ultralytics only the TrainConfig's fields; a default callback
    (copied into each new YOLO) sets these before the optimizer is built, and drops ultralytics'
    Ray Tune callback, which would report its own second result per epoch."""
    from ultralytics.utils.callbacks.base import default_callbacks

    def set_args(trainer) -> None:
        trainer.args.lr0, trainer.args.optimizer = lr0, optimizer
        for event, fns in trainer.callbacks.items():
            trainer.callbacks[event] = [f for f in fns
                                        if not getattr(f, "__module__", "").endswith("callbacks.raytune")]

    default_callbacks["on_pretrain_routine_start"].append(set_args)
    try:
        yield
    finally:
        default_callbacks["on_pretrain_routine_start"].remove(set_args)


def run_trial(config: dict[str, Any]) -> None:
    """Tune's trainable: one grid point's pipeline in a child run; the final report carries the
    test metric (ASHA's max_t: Tune stops the trial right after it, with nothing left to do)."""
    from ray import tune

    get_settings(fresh=True)  # a reused worker process: this trial's environment
    spec = TrialSpec.model_validate(config["spec"])
    point = point_of(config)
    events = _TuneEvents(spec.epochs, EPOCH_METRIC[spec.task])
    tags = {PARENT_RUN_TAG: spec.parent_run_id, TAG_SWEEP: "trial",
            TAG_TRIAL_ID: tune.get_context().get_trial_id() or ""}
    pipe = TrialPipeline(trial_config(spec, point), point, spec, events, tags)
    try:
        res = pipe.run()
    except SystemExit:  # ASHA stopped the trial inside tune.report (the worker may be gone before this)
        if pipe.tracker is not None and pipe.tracker.run_id:
            pipe.tracker.tags({TAG_STOPPED: "stopped early by ASHA"})
            pipe.tracker.end("KILLED")
        raise
    ev = res.eval
    tune.report({"epoch": spec.epochs, VAL_METRIC: events.last if events.last is not None else 0.0,
                 "test_metric": ev.primary_value if ev else 0.0, "run_id": res.run_id or ""})

"""``visionloop sweep``: a grid over model sizes, image sizes and learning rates on Ray Tune.

    checks → parent MLflow run → Tuner.fit (one trial per grid point, ASHA) → latency + size
    → the best trial by the gate's metric on the test split → registered as ``challenger``

Each trial runs in a Ray worker as the training pipeline's own steps (materialize → train →
export + parity → evaluate on the test split, the served path) in an MLflow child run
(``mlflow.parentRunId``) of one parent run in the model's experiment; registration happens
once, here, for the best trial. Trials run in parallel as far as the cluster's CPUs allow
(``--cpus-per-trial`` each).

Why not ultralytics' ``model.tune(use_ray=True)``: it drives Ray through the legacy
``ray.air`` API and calls ``ray.shutdown()`` on a session it did not start. Here the current
``ray.tune.Tuner`` runs in a :func:`~.ray_engine.ray_session` (the same local-Ray / RAY_ADDRESS
rules as ``train --engine ray``), and ultralytics' own Ray Tune callback is removed from every
trial's trainer (it would report a second result per epoch).

Early stopping: each epoch's validation metric (mAP50-95, or top-1) goes to ``tune.report``;
ASHA stops a trial whose metric falls below its rung's cutoff. Reaching ASHA's ``max_t``
stops a trial at once, so the last epoch is reported only after the export and the
evaluation, as the trial's final result. A stopped trial's child run is marked KILLED with
the tag ``visionloop.sweep.stopped``; it is never a candidate for registration.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..errors import ValidationError, VisionloopError
from ..evaluation import LABELS, PRIMARY, EvalResult
from ..settings import get_settings
from . import steps
from .cache import StepCache, cache_key
from .config import TrainConfig, build_config
from .events import NullEvents, PipelineEvents
from .pipeline import Pipeline, PipelineResult
from .steps import Plan
from .tracking import Tracker, git_commit, package_versions
from .trainer import EpochMetrics

PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests child runs under the parent
TAG_SWEEP = "visionloop.sweep"  # "parent" or "trial"
TAG_TRIAL_ID = "visionloop.sweep.trial_id"
TAG_STOPPED = "visionloop.sweep.stopped"
TAG_BEST = "visionloop.sweep.best_run"
VAL_METRIC = "val_metric"  # the per-epoch metric ASHA compares (Tune's result key)
# ultralytics' per-epoch validation metric, by task (the clean names of trainer.EpochMetrics)
EPOCH_METRIC = {"detect": "metrics/mAP50-95", "classify": "metrics/accuracy_top1"}
LATENCY_RUNS, LATENCY_WARMUP = 20, 3
DEFAULT_OPTIMIZER = "SGD"  # ultralytics' 'auto' ignores lr0 (it picks AdamW and its own rate)


class SweepConfig(BaseModel):
    """What ``visionloop sweep`` searches; every value checked before anything runs."""

    data: str
    models: list[str]
    imgsz: list[int]
    lr0: list[float]
    epochs: int
    name: str = ""
    cpus_per_trial: int = Field(default=1, description="CPUs (and torch threads) each trial takes.")
    samples: int = Field(default=1, description="Repeats of every grid point (seed + repeat index).")
    grace_period: int = Field(default=1, description="ASHA: epochs every trial runs before it may be stopped.")
    reduction_factor: int = Field(default=2, description="ASHA: keep the best 1/N at each rung.")
    optimizer: str = DEFAULT_OPTIMIZER
    device: str = "cpu"
    batch: int = -1
    seed: int = 0


class TrialPoint(BaseModel):
    """One grid point."""

    model: str
    imgsz: int
    lr0: float
    repeat: int = 0

    def label(self) -> str:
        rep = f"-r{self.repeat}" if self.repeat else ""
        return f"{Path(self.model).stem}-{self.imgsz}px-lr{self.lr0:g}{rep}"


class TrialSpec(BaseModel):
    """What every trial shares (sent to the workers inside Tune's param space)."""

    data: str  # N@V, resolved by the caller
    name: str
    epochs: int
    task: str
    parent_run_id: str
    cpus: int
    optimizer: str
    device: str
    batch: int
    seed: int


class TrialRow(BaseModel):
    """One trial in the comparison table (and ``--json``)."""

    trial: str
    run_id: str | None = None
    model: str
    imgsz: int
    lr0: float
    repeat: int = 0
    status: str = Field(description="FINISHED, STOPPED (by ASHA), FAILED or KILLED.")
    epochs_run: int = 0
    val_metric: float | None = Field(default=None, description="Last validation metric reported to Tune.")
    metric: float | None = Field(default=None, description="The gate's metric on the test split (served path).")
    latency_ms: float | None = Field(default=None, description="Median ms per image, ONNX on CPU (OnnxModel).")
    onnx_bytes: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    error: str = ""


class SweepResult(BaseModel):
    model_name: str
    dataset: str
    task: str
    metric: str = Field(description="The gate's metric key: map50_95 or top1.")
    metric_label: str
    parent_run_id: str
    trials: list[TrialRow]
    best: str | None = Field(default=None, description="The best trial's name.")
    registered: str | None = Field(default=None, description="NAME/VERSION of the registered best trial.")
    aliases: list[str] = Field(default_factory=list)


# -- input ------------------------------------------------------------------------------------
def parse_list(text: str | None, flag: str, kind: type = str) -> list[Any]:
    """``a,b,c`` → typed values; an empty list or a bad value is one line naming the flag."""
    items = [s.strip() for s in (text or "").split(",") if s.strip()]
    if not items:
        raise ValidationError(f"{flag}: give at least one value (a comma-separated list)")
    try:
        values = [kind(s) for s in items]
    except ValueError:
        raise ValidationError(f"{flag}: {text!r} is not a comma-separated list of {kind.__name__} values") from None
    if len(set(values)) != len(values):
        raise ValidationError(f"{flag}: {text!r} lists a value twice")
    return values


def grid(cfg: SweepConfig) -> list[TrialPoint]:
    return [TrialPoint(model=m, imgsz=s, lr0=lr, repeat=r)
            for m, s, lr, r in itertools.product(cfg.models, cfg.imgsz, cfg.lr0, range(cfg.samples))]


def trial_config(spec: TrialSpec, point: TrialPoint) -> TrainConfig:
    """The trial's training parameters, checked by the same rules as ``visionloop train``."""
    return build_config({}, {"model": point.model, "data": spec.data, "epochs": spec.epochs, "imgsz": point.imgsz,
                             "name": spec.name, "device": spec.device, "batch": spec.batch,
                             "seed": spec.seed + point.repeat, "threads": spec.cpus, "patience": spec.epochs})


def _check(cfg: SweepConfig):
    """Everything that needs no Ray and no run: returns the dataset's manifest."""
    from ..datasets.ingest import resolve_or_import
    from .trainer import architecture_task, check_model_source, check_model_task

    for value, flag in ((cfg.epochs, "--epochs"), (cfg.cpus_per_trial, "--cpus-per-trial"), (cfg.samples, "--samples"),
                        (cfg.grace_period, "--grace-period")):
        if value < 1:
            raise ValidationError(f"{flag}: must be at least 1")
    if cfg.grace_period > cfg.epochs:
        raise ValidationError(f"--grace-period {cfg.grace_period} exceeds --epochs {cfg.epochs}")
    if cfg.reduction_factor < 2:
        raise ValidationError("--reduction-factor: must be at least 2")
    if any(lr <= 0 or lr >= 1 for lr in cfg.lr0):
        raise ValidationError("--lr0: every learning rate must be between 0 and 1")
    for model in cfg.models:
        if not model.endswith((".yaml", ".yml", ".pt")):
            raise ValidationError(f"--models: {model!r} must be an architecture .yaml (e.g. yolo11n.yaml) or a .pt")
        check_model_source(model)
    if not cfg.data:
        raise ValidationError("--data is required: a dataset version such as shapes@1")
    m = resolve_or_import(cfg.data, None, cfg.name)
    for model in cfg.models:
        found = architecture_task(model)
        if found is not None:
            check_model_task(model, found, m.task)
    if not m.by_split("train"):
        raise ValidationError(f"dataset {m.ref} has no training images")
    if not m.by_split("test"):
        raise ValidationError(f"dataset {m.ref} has no test split: the sweep picks its best trial on the test images "
                              "(re-split it with `visionloop data split`)")
    probe = TrialSpec(data=m.ref, name=cfg.name or m.name, epochs=cfg.epochs, task=m.task, parent_run_id="-",
                      cpus=cfg.cpus_per_trial, optimizer=cfg.optimizer, device=cfg.device, batch=cfg.batch,
                      seed=cfg.seed)
    for point in grid(cfg):
        trial_config(probe, point)  # --imgsz 50, --device x...: the train command's own messages
    return m


# -- the trial, in a Ray worker -----------------------------------------------------------------
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


class _TrialPipeline(Pipeline):
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
    point = TrialPoint.model_validate({k: config[k] for k in ("model", "imgsz", "lr0", "repeat")})
    events = _TuneEvents(spec.epochs, EPOCH_METRIC[spec.task])
    tags = {PARENT_RUN_TAG: spec.parent_run_id, TAG_SWEEP: "trial",
            TAG_TRIAL_ID: tune.get_context().get_trial_id() or ""}
    pipe = _TrialPipeline(trial_config(spec, point), point, spec, events, tags)
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


# -- the caller's side --------------------------------------------------------------------------
def _trial_lines(events: PipelineEvents):
    """A Tune callback that tells the caller's events when each trial starts and ends."""
    from ray.tune import Callback

    class TrialLines(Callback):
        def __init__(self, events: PipelineEvents):
            self.events = events

        def __getstate__(self) -> dict:  # Tune pickles its callbacks (the console holds locks)
            return {}

        def __setstate__(self, state: dict) -> None:
            self.events = NullEvents()

        def _say(self, trial, what: str) -> None:
            self.events.message(f"trial {trial.trial_id} {what}: {_point_of(trial.config).label()}")

        def on_trial_start(self, iteration, trials, trial, **info):
            self._say(trial, "started")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._say(trial, "ended")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._say(trial, "failed")

    return TrialLines(events)


def _point_of(config: dict[str, Any]) -> TrialPoint:
    return TrialPoint.model_validate({k: config[k] for k in ("model", "imgsz", "lr0", "repeat")})


def _child_runs(tracker: Tracker, parent_id: str) -> list[Any]:
    return list(tracker.client.search_runs([tracker.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent_id}'",
                                           max_results=10000))


def _download(client, run_id: str, path: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)  # MLflow wants the destination to exist
    return Path(client.download_artifacts(run_id, path, str(dest)))


def measure_latency(onnx: Path, image: Path, runs: int = LATENCY_RUNS) -> float:
    """Median ms per image through the serving runtime (decode not counted), one CPU thread."""
    from ..serving.preprocess import decode_image
    from ..serving.runtime import OnnxModel, PredictParams

    model = OnnxModel(onnx, intra_threads=1)
    decoded, params = decode_image(image.read_bytes()), PredictParams()
    for _ in range(LATENCY_WARMUP):
        model.predict(decoded, params)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict(decoded, params)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


class Sweep:
    def __init__(self, cfg: SweepConfig, events: PipelineEvents | None = None):
        self.cfg = cfg
        self.events = events or NullEvents()
        self.settings = get_settings()

    def run(self) -> SweepResult:
        from .ray_engine import check_reachable, cluster_from_env, ray_session, worker_env

        cfg = self.cfg
        m = _check(cfg)
        cluster = cluster_from_env()
        check_reachable(self.settings, cluster)
        name = cfg.name or m.name
        with ray_session(cluster, worker_env(self.settings, cluster)):
            self._check_capacity(cluster)
            tracker = Tracker(name)
            parent = tracker.start(f"sweep-{name}-{m.name}-v{m.version}", {
                TAG_SWEEP: "parent", "visionloop.dataset": m.ref, "visionloop.manifest_hash": m.content_hash,
                "visionloop.model_name": name, "mlflow.source.git.commit": git_commit() or ""})
            self.events.message(f"MLflow parent run {parent} ({tracker.location}); {len(grid(cfg))} trials on "
                                f"{cluster.describe()}, {cfg.cpus_per_trial} CPU each")
            try:
                result = self._sweep(tracker, m, name)
            except KeyboardInterrupt:
                self._reconcile(tracker, parent, {}, "KILLED", "interrupted (Ctrl-C)")
                tracker.tags({"visionloop.error": "interrupted (Ctrl-C)"})
                tracker.end("KILLED")
                raise
            except VisionloopError as exc:
                tracker.fail(str(exc).splitlines()[0])
                raise
            except Exception as exc:
                msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                tracker.fail(msg)
                raise VisionloopError(f"sweep failed: {msg} (run with --debug for details)") from exc
            tracker.end("FINISHED")
            return result

    def _check_capacity(self, cluster) -> None:
        import ray

        have = ray.cluster_resources()
        if self.cfg.cpus_per_trial > have.get("CPU", 0.0):
            raise ValidationError(f"--cpus-per-trial {self.cfg.cpus_per_trial}: {cluster.describe()} has "
                                  f"{have.get('CPU', 0.0):g} CPUs (nothing was started)")
        if self.cfg.device not in ("cpu", "auto") and have.get("GPU", 0.0) < 1:
            raise ValidationError(f"--device {self.cfg.device}: {cluster.describe()} has no GPU (nothing was started)")

    def _sweep(self, tracker: Tracker, m, name: str) -> SweepResult:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        cfg, parent = self.cfg, tracker.run_id
        points = grid(cfg)
        tracker.params({"models": ",".join(cfg.models), "imgsz": ",".join(map(str, cfg.imgsz)),
                        "lr0": ",".join(f"{v:g}" for v in cfg.lr0), "epochs": cfg.epochs, "samples": cfg.samples,
                        "trials": len(points), "cpus_per_trial": cfg.cpus_per_trial, "optimizer": cfg.optimizer,
                        "scheduler": f"ASHA(grace_period={cfg.grace_period}, reduction_factor={cfg.reduction_factor})",
                        "data": m.ref, "task": m.task})
        spec = TrialSpec(data=m.ref, name=name, epochs=cfg.epochs, task=m.task, parent_run_id=parent,
                         cpus=cfg.cpus_per_trial, optimizer=cfg.optimizer, device=cfg.device, batch=cfg.batch,
                         seed=cfg.seed)
        gpu = 0 if cfg.device in ("cpu", "auto") else 1
        space = {"model": tune.grid_search(cfg.models), "imgsz": tune.grid_search(cfg.imgsz),
                 "lr0": tune.grid_search(cfg.lr0), "repeat": tune.grid_search(list(range(cfg.samples))),
                 "spec": spec.model_dump()}
        # max_t = epochs: the last epoch's report (after export + evaluation) ends the trial
        scheduler = ASHAScheduler(time_attr="epoch", max_t=cfg.epochs, grace_period=cfg.grace_period,
                                  reduction_factor=cfg.reduction_factor)
        tuner = tune.Tuner(
            tune.with_resources(run_trial, {"cpu": cfg.cpus_per_trial, "gpu": gpu}),
            param_space=space,
            tune_config=tune.TuneConfig(metric=VAL_METRIC, mode="max", scheduler=scheduler, num_samples=1),
            run_config=tune.RunConfig(name=f"sweep-{parent}", storage_path=str(self.settings.cache_dir / "ray_results"),
                                      verbose=0, callbacks=[_trial_lines(self.events)],
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        grid_results = tuner.fit()
        by_trial = {(r.metrics or {}).get("trial_id") or f"unreported-{i}": r for i, r in enumerate(grid_results)}
        rows = self._rows(tracker, parent, by_trial)
        return self._finish(tracker, m, name, rows)

    def _reconcile(self, tracker: Tracker, parent: str, by_trial: dict, status: str, why: str) -> None:
        """Child runs a killed trial left RUNNING: marked ``status`` with the reason."""
        for run in _child_runs(tracker, parent):
            if run.info.status == "RUNNING":
                result = by_trial.get(run.data.tags.get(TAG_TRIAL_ID, ""))
                epoch = (result.metrics or {}).get("epoch") if result is not None else None
                reason = f"{why} after epoch {epoch}" if epoch else why
                tracker.client.set_tag(run.info.run_id, TAG_STOPPED if status == "KILLED" else "visionloop.error",
                                       reason)
                tracker.client.set_terminated(run.info.run_id, status)

    def _rows(self, tracker: Tracker, parent: str, by_trial: dict) -> list[TrialRow]:
        self._reconcile(tracker, parent, by_trial, "KILLED", "stopped early by ASHA")
        rows = []
        for run in _child_runs(tracker, parent):
            tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
            result = by_trial.get(tags.get(TAG_TRIAL_ID, ""))
            status = run.info.status
            if status == "KILLED" and TAG_STOPPED in tags:
                status = "STOPPED"
            history = tracker.client.get_metric_history(run.info.run_id, EPOCH_METRIC[params.get("task", "detect")])
            rows.append(TrialRow(
                trial=run.info.run_name or run.info.run_id, run_id=run.info.run_id, model=params.get("model", ""),
                imgsz=int(params.get("imgsz", 0)), lr0=float(params.get("lr0", 0.0)),
                repeat=int(params.get("seed", 0)) - self.cfg.seed, status=status, epochs_run=len(history),
                val_metric=history[-1].value if history else None,
                metric=metrics.get(f"test/{PRIMARY[params.get('task', 'detect')]}") if status == "FINISHED" else None,
                start_ms=run.info.start_time, end_ms=run.info.end_time,
                error=tags.get("visionloop.error", "") or (str(result.error).splitlines()[0]
                                                            if result is not None and result.error else "")))
        # grid points whose trial never made a run (failed before it): still a row
        made = {(r.model, r.imgsz, r.lr0, r.repeat) for r in rows}
        for result in by_trial.values():
            p = _point_of(result.config or {})
            if (p.model, p.imgsz, p.lr0, p.repeat) not in made and result.error:
                rows.append(TrialRow(trial=p.label(), model=p.model, imgsz=p.imgsz, lr0=p.lr0, repeat=p.repeat,
                                     status="FAILED", error=str(result.error).splitlines()[0]))
        return sorted(rows, key=lambda r: (r.model, r.imgsz, -r.lr0, r.repeat))

    def _finish(self, tracker: Tracker, m, name: str, rows: list[TrialRow]) -> SweepResult:
        from ..datasets.materialize import materialize
        from ..store import open_store
        from .evaluate import split_files

        primary = PRIMARY[m.task]
        result = SweepResult(model_name=name, dataset=m.ref, task=m.task, metric=primary, metric_label=LABELS[primary],
                             parent_run_id=tracker.run_id, trials=rows)
        finished = [r for r in rows if r.status == "FINISHED" and r.metric is not None]
        if not finished:
            errors = [f"{r.trial}: {r.error}" for r in rows if r.error]
            raise VisionloopError("no trial of the sweep finished" + (f"; {errors[0]}" if errors else ""))
        image = split_files(materialize(open_store(), m, self.settings.cache_dir), "test").files[0]
        with tempfile.TemporaryDirectory(prefix="vl-sweep-") as tmp:
            onnx_files = {}
            for r in finished:  # one after another, here: comparable numbers on one machine
                onnx = _download(tracker.client, r.run_id, "export/model.onnx", Path(tmp) / r.run_id)
                onnx_files[r.run_id] = onnx
                r.onnx_bytes = onnx.stat().st_size
                r.latency_ms = measure_latency(onnx, image)
                tracker.client.log_metric(r.run_id, "sweep/latency_ms", r.latency_ms)
                tracker.client.log_metric(r.run_id, "sweep/onnx_bytes", float(r.onnx_bytes))
            best = max(finished, key=lambda r: (r.metric, -(r.latency_ms or 0.0)))  # a tie: the faster one
            mv = self._register(best, m, name, onnx_files[best.run_id], Path(tmp))
        result.best, result.registered, result.aliases = best.trial, mv.ref, list(mv.aliases)
        tracker.metrics({f"best/{primary}": best.metric or 0.0, "best/latency_ms": best.latency_ms or 0.0})
        tracker.tags({TAG_BEST: best.run_id or "", "visionloop.registered": mv.ref})
        self.events.message(f"best trial {best.trial}: {LABELS[primary]} {best.metric:.4f} → registered {mv.ref} "
                            f"({', '.join(mv.aliases)})")
        return result

    def _register(self, best: TrialRow, m, name: str, onnx: Path, tmp: Path):
        """The best trial's run becomes a version (its card, as ``visionloop train`` writes it), challenger."""
        from .. import registry
        from .events import StepTimer
        from .export import ExportOutcome

        c = registry.client()
        point = TrialPoint(model=best.model, imgsz=best.imgsz, lr0=best.lr0, repeat=best.repeat)
        spec = TrialSpec(data=m.ref, name=name, epochs=self.cfg.epochs, task=m.task, parent_run_id="-",
                         cpus=self.cfg.cpus_per_trial, optimizer=self.cfg.optimizer, device=self.cfg.device,
                         batch=self.cfg.batch, seed=self.cfg.seed)
        cfg = trial_config(spec, point)
        pipe = _TrialPipeline(cfg, point, spec, NullEvents())
        plan = pipe._plan()  # the same key as the trial's (the same inputs)
        tracker = Tracker(name)
        tracker.run_id = best.run_id
        exported = ExportOutcome.model_validate_json(_download(c, best.run_id, "export/parity.json", tmp).read_text())
        exported = exported.model_copy(update={"onnx": onnx})
        ev = EvalResult.model_validate_json(_download(c, best.run_id, f"eval/{steps.EVAL_FILE}", tmp).read_text())
        ctx = steps.RunContext(pipe.cfg, plan, cfg.threads, tracker, StepTimer(self.events), self.events)
        mv = steps.register_step(ctx, ev.model_copy(update={"data": m.ref}), exported)
        if registry.CHALLENGER not in mv.aliases:  # the model's first version is also its champion
            registry.set_alias(name, registry.CHALLENGER, mv.version)
            mv = registry.get_version(name, mv.version)
        return mv


def run_sweep(cfg: SweepConfig, events: PipelineEvents | None = None) -> SweepResult:
    """Search ``cfg``'s grid on Ray Tune, register the best trial as challenger."""
    return Sweep(cfg, events).run()

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

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import ValidationError, VisionloopError
from ..evaluation import LABELS, PRIMARY, EvalResult
from ..settings import get_settings
from . import steps
from .events import NullEvents, PipelineEvents
from .sweep_spec import (EPOCH_METRIC, LATENCY_RUNS, LATENCY_WARMUP, PARENT_RUN_TAG, TAG_BEST, TAG_STOPPED,
                         TAG_SWEEP, TAG_TRIAL_ID, VAL_METRIC, SweepConfig, SweepResult, TrialPoint, TrialRow,
                         TrialSpec, grid, point_of, trial_config)
from .sweep_trial import TrialPipeline, run_trial
from .tracking import Tracker, git_commit


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
            self.events.message(f"trial {trial.trial_id} {what}: {point_of(trial.config).label()}")

        def on_trial_start(self, iteration, trials, trial, **info):
            self._say(trial, "started")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._say(trial, "ended")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._say(trial, "failed")

    return TrialLines(events)


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
            p = point_of(result.config or {})
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
        pipe = TrialPipeline(cfg, point, spec, NullEvents())
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

"""``visionloop train`` as a pipeline of logged, cached steps.

    resolve dataset → materialize → train → export (+ parity) → evaluate → register → summary

Step outputs are cached by a hash of their inputs (``cache.py``). When the named registered
model already has a version made from the same key, the whole command is cached: no new run,
no new version. ``--force`` redoes every step.

Every run is one MLflow run (``tracking.py``): params, dataset ref and manifest hash, git
commit, package versions, per-epoch metrics as steps, plots, weights, the ONNX file and the
evaluation JSON. A failing step marks it FAILED with the error and registers nothing; Ctrl-C
marks it KILLED. Progress goes to a :class:`~.events.PipelineEvents` (the CLI draws it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError, VisionloopError
from ..evaluation import EvalResult
from ..files import atomic_write_text
from ..settings import get_settings
from . import steps
from .steps import Plan
from .cache import StepCache, cache_key, code_version
from .config import DEFAULT_MODEL, TrainConfig
from .events import LogEvents, PipelineEvents, StepRecord, StepTimer
from .tracking import Tracker, git_commit, package_versions

CACHED_STEPS = ("materialize", "train", "export", "evaluate", "register")


@dataclass
class PipelineResult:
    model_name: str
    version: str | None
    run_id: str | None
    cached: bool  # the whole command was a no-op (an identical version already registered)
    dataset: str
    cache_key: str
    params: dict[str, Any]
    eval: EvalResult | None
    aliases: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    summary_md: str = ""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Pipeline:
    def __init__(self, cfg: TrainConfig, events: PipelineEvents | None = None):
        self.cfg = cfg
        self.events = events or LogEvents()
        self.timer = StepTimer(self.events)
        self.settings = get_settings()

    def run(self) -> PipelineResult:
        plan = self._plan()
        if self.cfg.force:
            plan.cache.clear()
        else:
            hit = self._registered_hit(plan)
            if hit is not None:
                return self._cached_result(hit, plan)
        tracker = Tracker(plan.name)
        run_id = self._start_run(tracker, plan)
        try:
            result = self._steps(tracker, plan)
        except KeyboardInterrupt:
            tracker.tags({"visionloop.error": "interrupted (Ctrl-C)"})
            tracker.end("KILLED")
            self.events.message(f"interrupted: MLflow run {run_id} marked KILLED; nothing was registered")
            raise
        except VisionloopError as exc:
            tracker.fail(_one_line(exc))
            raise
        except Exception as exc:  # a bug or a library error: still one line, the run says FAILED
            msg = f"{type(exc).__name__}: {_one_line(exc)}"
            tracker.fail(msg)
            raise VisionloopError(f"training pipeline failed: {msg} (run with --debug for details)") from exc
        tracker.end("FINISHED")
        return result

    def _plan(self) -> Plan:
        """Input checks that need no run: a bad value never leaves a run or a version behind."""
        from ..datasets.ingest import is_import_source, resolve_or_import
        from .trainer import architecture_task, check_model_source, check_model_task

        cfg = self.cfg
        check_model_source(cfg.model)
        if not cfg.data:
            raise ValidationError("--data is required: a dataset version such as shapes@1, or a zip to import")
        with self.timer.step("resolve dataset") as st:
            m = resolve_or_import(cfg.data, cfg.max_width, cfg.name)
            st.detail = (f"imported {cfg.data} as {m.ref}" if is_import_source(cfg.data)
                         else f"{m.ref} ({len(m.images)} images, {m.content_hash[:12]})")
        if not cfg.model_given and cfg.model != DEFAULT_MODEL[m.task]:  # no --model: the task's own default
            cfg = self.cfg = cfg.model_copy(update={"model": DEFAULT_MODEL[m.task]})
        found = architecture_task(cfg.model)  # a .pt's task is checked once it is loaded
        if found is not None:
            check_model_task(cfg.model, found, m.task)
        if not m.by_split("train"):
            raise ValidationError(f"dataset {m.ref} has no training images")
        device = cfg.resolved_device()
        batch = cfg.resolved_batch(device)
        params = {**cfg.training_params(), "device": device, "batch": batch}
        code = code_version()
        cache = StepCache(self.settings.cache_dir, cache_key(m, params, code))
        return Plan(m, cfg.name or m.name, device, batch, params, code, cache, git_commit())

    def _start_run(self, tracker: Tracker, plan: Plan) -> str:
        m, commit = plan.manifest, plan.commit
        tags = {"visionloop.dataset": m.ref, "visionloop.manifest_hash": m.content_hash,
                "visionloop.cache_key": plan.cache.key, "visionloop.code_version": plan.code,
                "mlflow.source.git.commit": commit or "", "visionloop.model_name": plan.name}
        run_id = tracker.start(f"{plan.name}-{m.name}-v{m.version}", {k: v for k, v in tags.items() if v})
        self.events.message(f"MLflow run {run_id} ({tracker.location})")
        return run_id

    # -- cache hit: identical inputs already registered under this name ------------------------
    def _registered_hit(self, plan: Plan):
        from .. import registry

        try:
            found = registry.find_versions_by_tag(plan.name, registry.TAG_CACHE_KEY, plan.cache.key)
        except VisionloopError:
            return None
        return found[-1] if found else None

    def _cached_result(self, mv, plan: Plan) -> PipelineResult:
        from .. import registry

        for step in CACHED_STEPS:
            with self.timer.step(step, cached=True) as st:
                if step == "register":
                    st.detail = f"{mv.ref} already holds this training (use --force to retrain)"
        card = registry.get_card(mv)
        res = PipelineResult(plan.name, mv.version, mv.run_id, True, plan.manifest.ref, plan.cache.key,
                             plan.params, card.eval, aliases=mv.aliases,
                             steps=self.timer.records, artifacts={"model": f"models:/{plan.name}/{mv.version}"})
        return _with_summary(res)

    # -- the real work ------------------------------------------------------------------------
    def _steps(self, tracker: Tracker, plan: Plan) -> PipelineResult:
        cfg, m = self.cfg, plan.manifest
        threads = cfg.resolved_threads() if plan.device == "cpu" else 0
        tracker.params({**plan.params, "data": m.ref, "task": m.task, "name": plan.name, "imgsz": cfg.imgsz,
                        "max_width": cfg.max_width, "engine": cfg.engine, "threads": threads or "-",
                        "freeze": cfg.freeze or 0})
        tracker.tags({f"version.{k}": v for k, v in package_versions().items()})
        ctx = steps.RunContext(cfg, plan, threads, tracker, self.timer, self.events)

        data_yaml = steps.materialize_step(ctx, self.settings.cache_dir)
        trained = steps.train_step(ctx, data_yaml)
        exported = steps.export_step(ctx, data_yaml, trained)
        ev = steps.evaluate_step(ctx, data_yaml, exported, trained.log_file)
        mv = steps.register_step(ctx, ev, exported)

        records = self.timer.records
        tracker.metrics({f"step_seconds/{s.name.replace(' ', '_')}": s.seconds for s in records})
        tracker.tags({f"step.{s.name.replace(' ', '_')}": s.status for s in records})
        res = PipelineResult(
            plan.name, mv.version, tracker.run_id, False, m.ref, plan.cache.key, plan.params, ev,
            aliases=mv.aliases, steps=records,
            artifacts={"model": f"models:/{plan.name}/{mv.version}", "run": tracker.artifact_uri,
                       "onnx": str(exported.onnx), "weights": str(trained.best_pt),
                       "train_log": str(trained.log_file), "plots": str(trained.save_dir)},
        )
        _with_summary(res)
        summary = plan.cache.path("summary.md")
        atomic_write_text(summary, res.summary_md)
        tracker.artifact(summary)
        return res


def _with_summary(res: PipelineResult) -> PipelineResult:
    from ..reports import render_training_summary

    res.summary_md = render_training_summary(res)
    return res


def registered_version(cfg: TrainConfig):
    """The registered version that holds exactly this training (the same cache key), or None.
    Runs only the checks before a run (``--data`` is resolved, maybe imported); trains nothing."""
    from .events import NullEvents

    p = Pipeline(cfg, NullEvents())
    return p._registered_hit(p._plan())


def run_pipeline(cfg: TrainConfig, events: PipelineEvents | None = None) -> PipelineResult:
    """Train, export, evaluate and register as ``cfg`` says; progress to ``events`` (default: log).
    ``--engine ray`` runs the same pipeline as a Ray task (:mod:`.ray_engine`)."""
    if cfg.engine == "ray":
        from .ray_engine import run_on_ray

        return run_on_ray(cfg, events or LogEvents())
    return Pipeline(cfg, events).run()

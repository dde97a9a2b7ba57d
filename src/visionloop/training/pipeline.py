"""``visionloop train`` as a pipeline of logged, cached steps.

    resolve dataset → materialize → train → export (+ parity) → evaluate → register → summary

The cache key of a training is a hash of what determines its result: the dataset's content
hash, the training parameters (with batch/device resolved) and the code version (visionloop
and ultralytics versions plus a hash of this package's source). Step outputs live under
``VISIONLOOP_HOME/cache/train/<key>``; a step whose done-marker exists is reported "cached".
When the named registered model already has a version made from the same key, the whole
command is cached: no new run, no new version. ``--force`` redoes every step.

Every run is one MLflow run (created through MlflowClient, never the global fluent state):
params, dataset ref and manifest hash, git commit, package versions, per-epoch metrics as
steps, plots, weights, the ONNX file and the evaluation JSON. A failing step marks it FAILED
with the error and registers nothing; Ctrl-C marks it KILLED.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import __version__
from ..datasets.manifest import DatasetManifest, DatasetRef
from ..errors import ValidationError, VisionloopError
from ..settings import get_settings
from .config import TrainConfig
from .evaluate import EvalResult

STEP_MARK = ".done"
SUMMARY_METRICS = ("metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95")


@dataclass
class StepRecord:
    name: str
    status: str  # done | cached
    seconds: float
    detail: str = ""


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


# -- small helpers -------------------------------------------------------------------------------
def code_version() -> str:
    """visionloop + ultralytics versions + a hash of the training code: any change retrains."""
    from importlib.metadata import version

    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return f"visionloop-{__version__}+ultralytics-{version('ultralytics')}+{h.hexdigest()[:12]}"


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the repository holding ``cwd`` (default: this code's checkout), None outside git."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("visionloop", "ultralytics", "torch", "onnx", "onnxruntime", "mlflow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def cache_key(manifest: DatasetManifest, params: dict[str, Any], code: str) -> str:
    payload = {"data": manifest.content_hash, "params": params, "code": code}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_import_source(data: str) -> bool:
    return data.endswith(".zip") or "://" in data or Path(data).exists()


# -- the reporter: step lines and the epoch bar on stderr --------------------------------------
class Reporter:
    def __init__(self, console: Console):
        self.console = console
        self.steps: list[StepRecord] = []

    @contextmanager
    def step(self, name: str, cached: bool = False) -> Iterator[StepRecord]:
        """Time one step; a spinner while it runs (terminals only), one line when it is done."""
        rec = StepRecord(name, "cached" if cached else "done", 0.0)
        t0 = time.perf_counter()
        if cached or name == "train":  # train has its own progress bar
            yield rec
        else:
            with self.console.status(f"{name}…"):
                yield rec
        rec.seconds = time.perf_counter() - t0
        self.steps.append(rec)
        label = "[yellow]cached[/yellow]" if rec.status == "cached" else f"done in {rec.seconds:.1f}s"
        detail = f" — {escape(rec.detail)}" if rec.detail else ""
        self.console.print(f"[green]✓[/green] {name}: {label}{detail}", highlight=False, soft_wrap=True)


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

    def on_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        short = {"box": metrics.get("train/box_loss"), "P": metrics.get("metrics/precision"),
                 "R": metrics.get("metrics/recall"), "mAP50": metrics.get("metrics/mAP50"),
                 "mAP50-95": metrics.get("metrics/mAP50-95")}
        self.latest = " ".join(f"{k} {v:.3f}" for k, v in short.items() if v is not None)
        self.progress.update(self.task, completed=epoch, info=self.latest)


# -- MLflow run ----------------------------------------------------------------------------------
class Tracker:
    """The pipeline's MLflow run, through one MlflowClient bound to our tracking URI."""

    def __init__(self, experiment: str):
        from .. import registry

        self.client = registry.client()
        self.uri = registry.tracking_uri()
        self.experiment_id = registry.experiment_id(experiment)
        self.run_id: str | None = None

    def start(self, run_name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        return self.run_id

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in values.items() if math.isfinite(float(v))]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def artifact(self, path: Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), subdir)

    def end(self, status: str) -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status)

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri


# -- steps -------------------------------------------------------------------------------------
def resolve_dataset(data: str, max_width: int | None, name: str = "") -> DatasetManifest:
    """``N@V`` → its manifest; a zip path/URL is imported first (a new version, or the same one)."""
    from ..datasets.catalog import Catalog
    from ..store import open_store

    if not data:
        raise ValidationError("--data is required: a dataset version such as shapes@1, or a zip to import")
    if _is_import_source(data):
        return _import_source(data, max_width, name)
    return Catalog(open_store()).load(DatasetRef.parse(data))


def _import_source(data: str, max_width: int | None, name: str) -> DatasetManifest:
    """Import a zip/folder/URL with the data importer; unchanged content reuses the latest version."""
    import re

    from ..datasets.formats import open_source
    from ..datasets.ingest import ImportOptions, ingest
    from ..store import open_store

    if not name:
        stem = Path(data.rstrip("/").split("?")[0]).name.removesuffix(".zip")
        name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", stem).strip("-.") or "dataset"
    result = ingest(open_store(), open_source(data), name, ImportOptions(max_width=max_width))
    return result.commit.manifest


class Pipeline:
    def __init__(self, cfg: TrainConfig, console: Console):
        self.cfg = cfg
        self.console = console
        self.report = Reporter(console)
        self.settings = get_settings()

    def run(self) -> PipelineResult:
        cfg = self.cfg
        if cfg.engine != "local":
            raise ValidationError(f"--engine {cfg.engine} is not available in this build; use --engine local")
        from . import trainer as trainer_mod

        # Input checks that need no run: a bad value never leaves a run or a version behind.
        trainer_mod.check_model_source(cfg.model)
        with self.report.step("resolve dataset") as st:
            manifest = resolve_dataset(cfg.data, cfg.max_width, cfg.name)
            if cfg.data and _is_import_source(cfg.data):
                st.detail = f"imported {cfg.data} as {manifest.ref}"
            else:
                st.detail = f"{manifest.ref} ({len(manifest.images)} images, {manifest.content_hash[:12]})"
        if manifest.task != "detect":
            raise ValidationError(f"dataset {manifest.ref} is a {manifest.task} dataset; only detection training is supported")
        if not manifest.by_split("train"):
            raise ValidationError(f"dataset {manifest.ref} has no training images")
        name = cfg.name or manifest.name
        device = cfg.resolved_device()
        batch = cfg.resolved_batch(device)
        params = {**cfg.training_params(), "device": device, "batch": batch}
        code = code_version()
        key = cache_key(manifest, params, code)
        work = self.settings.cache_dir / "train" / key[:24]

        if cfg.force:
            shutil.rmtree(work, ignore_errors=True)
        else:
            hit = self._registered_hit(name, key)
            if hit is not None:
                return self._cached_result(hit, name, manifest, key, params)

        tracker = Tracker(name)
        commit = git_commit()
        run_tags = {"visionloop.dataset": manifest.ref, "visionloop.manifest_hash": manifest.content_hash,
                    "visionloop.cache_key": key, "visionloop.code_version": code,
                    "mlflow.source.git.commit": commit or "", "visionloop.model_name": name}
        run_id = tracker.start(f"{name}-{manifest.name}-v{manifest.version}", {k: v for k, v in run_tags.items() if v})
        self.console.print(f"MLflow run {run_id} ({tracker.uri if '@' not in tracker.uri else 'tracking server'})",
                           highlight=False, markup=False, soft_wrap=True)
        try:
            result = self._steps(tracker, manifest, name, device, batch, params, key, work, commit)
        except KeyboardInterrupt:
            tracker.tags({"visionloop.error": "interrupted (Ctrl-C)"})
            tracker.end("KILLED")
            self.console.print(f"interrupted: MLflow run {run_id} marked KILLED; nothing was registered",
                               highlight=False, markup=False, soft_wrap=True)
            raise
        except VisionloopError as exc:
            self._fail(tracker, _one_line(exc))
            raise
        except Exception as exc:  # a bug or a library error: still one line, the run says FAILED
            msg = f"{type(exc).__name__}: {_one_line(exc)}"
            self._fail(tracker, msg)
            raise VisionloopError(f"training pipeline failed: {msg} (run with --debug for details)") from exc
        tracker.end("FINISHED")
        return result

    @staticmethod
    def _fail(tracker: Tracker, msg: str) -> None:
        tracker.tags({"visionloop.error": msg[:5000]})
        tracker.end("FAILED")

    # -- cache hit: identical inputs already registered under this name ------------------------
    def _registered_hit(self, name: str, key: str):
        from .. import registry

        try:
            found = registry.find_versions_by_tag(name, registry.TAG_CACHE_KEY, key)
        except VisionloopError:
            return None
        return found[-1] if found else None

    def _cached_result(self, mv, name: str, manifest: DatasetManifest, key: str, params: dict) -> PipelineResult:
        for step in ("materialize", "train", "export", "evaluate", "register"):
            with self.report.step(step, cached=True) as st:
                if step == "register":
                    st.detail = f"{mv.ref} already holds this training (use --force to retrain)"
        eval_file = self.settings.cache_dir / "train" / key[:24] / "eval.json"
        ev = EvalResult.model_validate_json(eval_file.read_text()) if eval_file.exists() else None  # else: tags
        res = PipelineResult(name, mv.version, mv.run_id, True, manifest.ref, key, params, ev,
                             aliases=mv.aliases, steps=self.report.steps,
                             artifacts={"model": f"models:/{name}/{mv.version}"})
        res.summary_md = render_summary(res, metrics_from_tags=mv.metrics)
        return res

    # -- the real work ------------------------------------------------------------------------
    def _steps(self, tracker: Tracker, manifest: DatasetManifest, name: str, device: str, batch: int,
               params: dict, key: str, work: Path, commit: str | None) -> PipelineResult:
        from .. import registry
        from ..datasets.materialize import materialize
        from ..store import open_store
        from . import export as export_mod
        from . import trainer as trainer_mod
        from .evaluate import evaluate_model

        cfg = self.cfg
        threads = cfg.resolved_threads() if device == "cpu" else 0
        tracker.params({**params, "data": manifest.ref, "name": name, "imgsz": cfg.imgsz,
                        "max_width": cfg.max_width, "engine": cfg.engine, "threads": threads or "-"})
        tracker.tags({f"version.{k}": v for k, v in package_versions().items()})

        with self.report.step("materialize") as st:
            data_yaml = materialize(open_store(), manifest, self.settings.cache_dir)
            st.detail = str(data_yaml.parent)

        # train ---------------------------------------------------------------------------------
        train_done = work / f"train{STEP_MARK}"
        if train_done.exists():
            with self.report.step("train", cached=True) as st:
                info = json.loads(train_done.read_text())
                history = trainer_mod.read_results_csv(Path(info["save_dir"]) / "results.csv", cfg.epochs)
                for em in history:  # replay the per-epoch curves into this run
                    tracker.metrics(em.metrics, step=em.epoch)
                st.detail = f"{len(history)} epochs from {info['save_dir']}"
        else:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            with self.report.step("train") as st:
                bar = EpochBar(self.console, cfg.epochs)

                def on_epoch(em):
                    tracker.metrics(em.metrics, step=em.epoch)
                    bar.on_epoch(em.metrics, em.epoch)

                with bar.progress:
                    out = trainer_mod.train(cfg, data_yaml, work, device=device, batch=batch,
                                            on_epoch=on_epoch, on_batch=bar.on_batch, threads=threads or None)
                info = {"save_dir": str(out.save_dir), "best_pt": str(out.best_pt), "log_file": str(out.log_file),
                        "epochs_run": out.epochs_run, "final_metrics": out.final_metrics}
                train_done.write_text(json.dumps(info))
                cpu = f", {threads} torch threads" if threads else ""
                st.detail = f"{out.epochs_run} epochs{cpu}; log: {out.log_file}"
        save_dir, best_pt, log_file = Path(info["save_dir"]), Path(info["best_pt"]), Path(info["log_file"])
        final = info["final_metrics"]
        tracker.metrics({f"best/{k.split('/')[-1]}": v for k, v in final.items() if k in SUMMARY_METRICS})
        for p in sorted(save_dir.iterdir()):
            if p.suffix in trainer_mod.PLOT_SUFFIXES:
                tracker.artifact(p, "plots")
        for p in (save_dir / "results.csv", save_dir / "args.yaml", log_file):
            if p.exists():
                tracker.artifact(p, "train")
        tracker.artifact(best_pt, "weights")

        # export + parity -------------------------------------------------------------------------
        onnx_path = work / "model.onnx"
        export_done = work / f"export{STEP_MARK}"
        test_images = _sample_images(data_yaml, manifest)
        with self.report.step("export", cached=export_done.exists()) as st:
            if not export_done.exists():
                with trainer_mod.ultralytics_output(log_file, cfg.verbose), trainer_mod.torch_threads(threads or 1):
                    ex = export_mod.export_onnx(best_pt, cfg.imgsz, onnx_path, {
                        # not the model name: a cached export is reused under any --name
                        "dataset": manifest.ref, "manifest_hash": manifest.content_hash,
                        "visionloop_version": __version__,
                    })
                    rep = export_mod.check_parity(best_pt, onnx_path, test_images, cfg.imgsz)
                export_mod.require_parity(rep)
                parity = {"images": rep.images, "compared": rep.compared, "nms_ties": rep.ties,
                          "min_iou": rep.min_iou, "max_conf_diff": rep.max_conf_diff, "opset": ex.opset}
                export_done.write_text(json.dumps(parity))
            parity = json.loads(export_done.read_text())
            st.detail = (f"opset {parity['opset']}; parity on {parity['images']} images: {parity['compared']} boxes, "
                         f"min IoU {parity['min_iou']:.4f}, max conf diff {parity['max_conf_diff']:.2g}")
        tracker.metrics({"parity/min_iou": parity["min_iou"], "parity/max_conf_diff": parity["max_conf_diff"],
                         "parity/boxes": parity["compared"]})
        (work / "parity.json").write_text(json.dumps(parity, indent=1))
        tracker.artifact(work / "parity.json", "export")
        tracker.artifact(onnx_path, "export")

        # evaluate -------------------------------------------------------------------------------
        eval_file = work / "eval.json"
        split = "test" if manifest.by_split("test") else "val" if manifest.by_split("val") else "train"
        with self.report.step("evaluate", cached=eval_file.exists()) as st:
            if not eval_file.exists():
                ev = evaluate_model(onnx_path, data_yaml, split, imgsz=cfg.imgsz, log_file=log_file)
                eval_file.write_text(ev.model_dump_json(indent=1))
            ev = EvalResult.model_validate_json(eval_file.read_text())
            ev = ev.model_copy(update={"data": manifest.ref})
            st.detail = (f"{ev.split} split ({ev.images} images): mAP50 {ev.map50:.3f}, mAP50-95 {ev.map50_95:.3f}, "
                         f"P {ev.precision:.3f}, R {ev.recall:.3f}")
        tracker.metrics(ev.mlflow_metrics())
        tracker.artifact(eval_file, "eval")

        # register ---------------------------------------------------------------------------------
        with self.report.step("register") as st:
            tags = {
                registry.TAG_DATASET: manifest.ref, registry.TAG_MANIFEST_HASH: manifest.content_hash,
                registry.TAG_CLASSES: json.dumps(manifest.classes), registry.TAG_IMGSZ: str(cfg.imgsz),
                registry.TAG_TASK: manifest.task, registry.TAG_CACHE_KEY: key,
                "base_model": cfg.model, "epochs": str(cfg.epochs), **ev.metric_tags(),
            }
            if commit:
                tags[registry.TAG_GIT_COMMIT] = commit
            mv = registry.register_version(name, tracker.run_id, onnx_path, tags,
                                           description=f"{cfg.model} on {manifest.ref}, {cfg.epochs} epochs")
            st.detail = f"{mv.ref} (aliases: {', '.join(mv.aliases) or 'none'})"
        tracker.tags({"visionloop.registered": mv.ref})
        tracker.metrics({f"step_seconds/{s.name.replace(' ', '_')}": s.seconds for s in self.report.steps})
        tracker.tags({f"step.{s.name.replace(' ', '_')}": s.status for s in self.report.steps})
        res = PipelineResult(
            name, mv.version, tracker.run_id, False, manifest.ref, key, params, ev, aliases=mv.aliases,
            steps=self.report.steps,
            artifacts={"model": f"models:/{name}/{mv.version}", "run": tracker.artifact_uri,
                       "onnx": str(onnx_path), "weights": str(best_pt), "train_log": str(log_file),
                       "plots": str(save_dir)},
        )
        res.summary_md = render_summary(res, metrics_from_tags=mv.metrics)
        (work / "summary.md").write_text(res.summary_md)
        tracker.artifact(work / "summary.md")
        return res


def _sample_images(data_yaml: Path, manifest: DatasetManifest, n: int = 8) -> list[Path]:
    """Up to ``n`` images for the parity check: the test split first, then val, then train."""
    root = data_yaml.parent / "images"
    for split in ("test", "val", "train"):
        d = root / split
        if d.is_dir():
            files = sorted(p for p in d.iterdir() if p.is_file())
            if files:
                return files[:n]
    return []


def render_summary(res: PipelineResult, metrics_from_tags: dict[str, float] | None = None) -> str:
    """Markdown: what was trained, how well, and where every artifact is (no secrets: URIs only)."""
    lines = [f"## visionloop train: {res.model_name}" + (f" version {res.version}" if res.version else ""), ""]
    if res.cached:
        lines += ["**cached**: an identical training (same data, parameters and code) is already registered; "
                  "nothing was retrained. Use `--force` to retrain.", ""]
    lines += ["| parameter | value |", "|---|---|", f"| dataset | {res.dataset} |"]
    lines += [f"| {k} | {v} |" for k, v in res.params.items()]
    lines += ["", "| test metric | value |", "|---|---|"]
    if res.eval is not None:
        ev = res.eval
        lines += [f"| split | {ev.split} ({ev.images} images, {ev.instances} boxes) |",
                  f"| mAP50 | {ev.map50:.4f} |", f"| mAP50-95 | {ev.map50_95:.4f} |",
                  f"| precision | {ev.precision:.4f} |", f"| recall | {ev.recall:.4f} |",
                  f"| inference | {ev.speed_ms.get('inference', 0.0):.1f} ms/image |"]
        lines += [f"| AP50-95 {c.name} | {c.ap50_95:.4f} |" for c in ev.per_class]
    elif metrics_from_tags:
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics_from_tags.items())]
    lines += ["", "| artifact | location |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in res.artifacts.items()]
    if res.run_id:
        lines.append(f"| MLflow run | `{res.run_id}` |")
    if res.aliases:
        lines.append(f"| aliases | {', '.join(res.aliases)} |")
    steps = ", ".join(f"{s.name} {s.status}" + (f" {s.seconds:.1f}s" if s.status == "done" else "") for s in res.steps)
    lines += ["", f"Steps: {steps}"]
    return "\n".join(lines) + "\n"


def run_pipeline(cfg: TrainConfig, console: Console, on_result: Callable[[PipelineResult], None] | None = None) -> PipelineResult:
    res = Pipeline(cfg, console).run()
    if on_result:
        on_result(res)
    return res

"""Markdown reports for pull requests (CML-compatible: ``cml comment create report.md``).

A report says, for a challenger model against the champion: the metric table old | new |
change on the same frozen test split, what the gate decided, what changed in the data, and the
training plots as image links next to the report (CML uploads linked local images).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from . import registry
from .datasets.diff import diff_manifests
from .datasets.manifest import DatasetManifest
from .evaluation import CLASS_SCORE, LABELS, EvalResult
from .files import atomic_write_text
from .promotion import Comparison, GateDecision
from .promotion.gate import fmt_interval as _interval

if TYPE_CHECKING:
    from .training.pipeline import PipelineResult

PLOT_NAMES = ("results.png", "BoxPR_curve.png", "PR_curve.png", "confusion_matrix.png",
              "confusion_matrix_normalized.png", "BoxF1_curve.png")
MAX_PLOTS = 4


class DatasetChange(BaseModel):
    old: str | None
    new: str
    images_old: int = 0
    images_new: int
    added: dict[str, int] = Field(default_factory=dict, description="New images per split.")
    removed: int = 0
    relabeled: int = 0
    unit: str = Field(default="boxes", description="What boxes_old/new count per class: boxes (detect) or images "
                      "(classify).")
    boxes_old: dict[str, int] = Field(default_factory=dict, description="Boxes (or labelled images) per class.")
    boxes_new: dict[str, int] = Field(default_factory=dict)


class Report(BaseModel):
    title: str
    old: str | None = Field(default=None, description="Baseline model ref (the champion).")
    new: str
    comparison: Comparison | None = None
    single: EvalResult | None = Field(default=None, description="Metrics when there is nothing to compare with.")
    decision: GateDecision | None = None
    promoted: bool | None = None
    dataset: DatasetChange | None = None
    plots: list[str] = Field(default_factory=list, description="Image paths relative to the report.")
    notes: list[str] = Field(default_factory=list)


def _boxes_per_class(m: DatasetManifest) -> dict[str, int]:
    """Boxes per class; for classification, images per class (one label each)."""
    out = {c: 0 for c in m.classes}
    for img in m.images:
        if m.task == "classify":
            if img.class_id is not None:
                out[m.classes[img.class_id]] += 1
            continue
        for b in img.boxes:
            out[m.classes[b.class_id]] += 1
    return out


def _unit(m: DatasetManifest) -> str:
    return "images" if m.task == "classify" else "boxes"


def dataset_change(old: DatasetManifest | None, new: DatasetManifest) -> DatasetChange:
    if old is None:
        return DatasetChange(old=None, new=new.ref, images_new=len(new.images), added=new.split_counts(),
                             unit=_unit(new), boxes_new=_boxes_per_class(new))
    d = diff_manifests(old, new)
    added: dict[str, int] = {}
    for img in d.added:
        added[img.split] = added.get(img.split, 0) + 1
    return DatasetChange(old=old.ref, new=new.ref, images_old=len(old.images), images_new=len(new.images),
                         added=added, removed=len(d.removed), relabeled=len(d.relabeled),
                         unit=_unit(new), boxes_old=_boxes_per_class(old), boxes_new=_boxes_per_class(new))


def collect_plots(run_id: str | None, dest: Path) -> list[Path]:
    """Copy the run's training plots (MLflow artifacts) into ``dest``; [] when there are none."""
    if not run_id:
        return []
    import mlflow

    c = registry.client()
    found: list[str] = []

    def walk(path: str | None, depth: int = 0) -> None:
        for f in c.list_artifacts(run_id, path):
            if f.is_dir and depth < 3:
                walk(f.path, depth + 1)
            elif f.path.rsplit("/", 1)[-1] in PLOT_NAMES:
                found.append(f.path)

    walk(None)
    found.sort(key=lambda p: PLOT_NAMES.index(p.rsplit("/", 1)[-1]))
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for path in found[:MAX_PLOTS]:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                         tracking_uri=registry.tracking_uri()))
        target = dest / local.name
        shutil.copyfile(local, target)
        out.append(target)
    return out


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def _eval_rows(ev: EvalResult, between: list[str] | None = None) -> list[str]:
    """``| mAP50 | 0.1234 |`` (or ``| top-1 |``) ... then ``between``, then one row per class:
    AP50-95 (detect) or accuracy (classify)."""
    rows = [f"| {LABELS[k]} | {_fmt(v)} |" for k, v in ev.headline().items()] + (between or [])
    label = CLASS_SCORE[ev.task]
    return rows + [f"| {label} {name} | {_fmt(v)} |" for name, v in ev.class_scores().items()]


def _gate_sets(d: GateDecision, cmp: Comparison | None) -> list[str]:
    """All compared test images, then the frozen original ones and those added since."""
    how = (f"{d.gate.confidence:.0%} interval ({d.gate.resamples} paired resamples)" if d.bootstrap
           else "interval (none: point estimate)")
    lines = [f"| test images | images | old {d.metric} | new {d.metric} | change | {how} |",
             "|---|---:|---:|---:|---:|---|"]
    if cmp is not None:
        lines.append(f"| all (`{cmp.data}` {cmp.split}) | {cmp.images} | {_fmt(cmp.a_eval.primary_value)} | "
                     f"{_fmt(cmp.b_eval.primary_value)} | {d.delta:+.4f} | {_interval(d.interval)} |")
    split_known = d.frozen is not None or d.added is not None
    for label, s in ((f"frozen (`{d.frozen_data}`)", d.frozen), ("added since", d.added)):
        if s is not None:
            lines.append(f"| {label} | {s.images} | {_fmt(s.champion)} | {_fmt(s.challenger)} | {s.delta:+.4f} | "
                         f"{_interval(s.interval)} |")
        elif split_known:
            lines.append(f"| {label} | 0 | - | - | - | - |")
    return lines


def render(rep: Report) -> str:
    """The markdown text (GitHub-flavoured tables; plots as relative image links)."""
    lines = [f"## {rep.title}", ""]
    if rep.comparison is not None:
        c = rep.comparison
        lines += [f"Champion `{c.a}` (old) vs challenger `{c.b}` (new), both evaluated on the "
                  f"**{c.split}** split of `{c.data}` ({c.images} images).", "",
                  "| metric | old | new | change |", "|---|---:|---:|---:|"]
        for r in c.rows:
            arrow = " ⬆" if r.change > 1e-9 else (" ⬇" if r.change < -1e-9 else "")
            lines.append(f"| {r.metric} | {_fmt(r.a)} | {_fmt(r.b)} | {r.change:+.4f}{arrow} |")
        lines.append("")
    elif rep.single is not None:
        e = rep.single
        lines += [f"`{rep.new}` on the **{e.split}** split of `{e.data}` ({e.images} images); "
                  "no champion to compare with yet.", "", "| metric | new |", "|---|---:|"]
        lines += _eval_rows(e) + [""]
    if rep.decision is not None:
        d = rep.decision
        verdict = "**passed**" if d.passed else "**refused**"
        lines += [f"Gate {verdict} (min_delta {d.gate.min_delta:+.4f} on the lower bound of the {d.metric} change, "
                  f"max_class_drop {d.gate.max_class_drop:.4f}): {d.summary()}."]
        lines += [f"- {r}" for r in d.reasons]
        if rep.promoted is not None:
            lines.append(f"Champion: {'moved to `' + rep.new + '`' if rep.promoted else 'unchanged'}.")
        lines += [""] + _gate_sets(d, rep.comparison) + [""]
    if rep.dataset is not None:
        ds = rep.dataset
        lines += ["### Data", ""]
        if ds.old:
            added = ", ".join(f"{n} {s}" for s, n in sorted(ds.added.items())) or "none"
            lines += [f"`{ds.old}` → `{ds.new}`: {ds.images_old} → {ds.images_new} images "
                      f"(added: {added}; removed: {ds.removed}; relabeled: {ds.relabeled}).", "",
                      f"| class | {ds.unit} old | {ds.unit} new | change |", "|---|---:|---:|---:|"]
            for cls in ds.boxes_new:
                o, n = ds.boxes_old.get(cls, 0), ds.boxes_new[cls]
                lines.append(f"| {cls} | {o} | {n} | {n - o:+d} |")
        else:
            lines += [f"`{ds.new}`: {ds.images_new} images ({', '.join(f'{n} {s}' for s, n in ds.added.items())}).", "",
                      f"| class | {ds.unit} |", "|---|---:|"] + [f"| {c} | {n} |" for c, n in ds.boxes_new.items()]
        lines.append("")
    if rep.plots:
        lines += ["### Training plots", ""] + [f"![{Path(p).stem}]({p})" for p in rep.plots] + [""]
    lines += [f"- {n}" for n in rep.notes]
    return "\n".join(lines).rstrip() + "\n"


def write(rep: Report, path: Path) -> Path:
    """Write atomically: a half-written report is never posted."""
    atomic_write_text(path, render(rep))
    return path


def plots_for(model: registry.ResolvedModel, report_path: Path) -> list[str]:
    """The challenger's plots copied beside the report, as links relative to it."""
    assets = report_path.parent / f"{report_path.stem}_assets"
    from mlflow.exceptions import MlflowException

    try:
        files = collect_plots(model.run_id, assets)
    except (OSError, MlflowException):  # plots are a nice-to-have: a missing artifact must not sink the report
        return []
    return [os.path.relpath(p, report_path.parent) for p in files]


def _manifest_of(model: registry.ResolvedModel) -> DatasetManifest | None:
    from .datasets.catalog import Catalog
    from .errors import NotFoundError, ValidationError
    from .store import open_store

    ref = model.tags.get(registry.TAG_DATASET, "")
    try:
        return Catalog(open_store()).load(ref) if ref else None
    except (NotFoundError, ValidationError):
        return None


def data_change(old: registry.ResolvedModel | None, new: registry.ResolvedModel) -> DatasetChange | None:
    """What changed between the datasets the two models were trained on."""
    new_m = _manifest_of(new)
    if new_m is None:
        return None
    return dataset_change(_manifest_of(old) if old is not None else None, new_m)


def build(new_ref: str, old_ref: str | None, data: str | None, out: Path, gate) -> Report:
    """Compare ``new_ref`` with ``old_ref`` (default: its model's champion) and write ``out``."""
    from . import promotion
    from .datasets.catalog import Catalog
    from .errors import NotFoundError
    from .store import open_store

    new = registry.resolve_model(new_ref)
    old_ref = old_ref or f"{new.name}@{registry.CHAMPION}"
    try:
        old = registry.resolve_model(old_ref)
    except NotFoundError:
        old = None
    rep = Report(title=f"visionloop: {new.name}", new=new.ref, old=old.ref if old else None,
                 dataset=data_change(old, new), plots=plots_for(new, out))
    if old is None or old.ref == new.ref:
        manifest = Catalog(open_store()).load(data or promotion.default_dataset(new))
        rep.single = promotion.evaluate_cached(new, manifest, "test")
        rep.notes.append(f"`{new.ref}` is the champion already." if old else "no champion yet.")
    else:
        rep.comparison = promotion.compare(old.ref, new.ref, data)
        rep.decision = promotion.decide(rep.comparison, gate)
    write(rep, out)
    return rep


def render_training_summary(res: PipelineResult) -> str:
    """Markdown of one ``visionloop train``: what was trained, how well, and where every artifact
    is (no secrets: URIs only)."""
    lines = [f"## visionloop train: {res.model_name}" + (f" version {res.version}" if res.version else ""), ""]
    if res.cached:
        lines += ["**cached**: an identical training (same data, parameters and code) is already registered; "
                  "nothing was retrained. Use `--force` to retrain.", ""]
    lines += ["| parameter | value |", "|---|---|", f"| dataset | {res.dataset} |"]
    lines += [f"| {k} | {v} |" for k, v in res.params.items()]
    lines += ["", "| test metric | value |", "|---|---|"]
    if res.eval is not None:
        ev = res.eval
        counted = f"{ev.images} images" + (f", {ev.instances} boxes" if ev.task == "detect" else "")
        lines += [f"| split | {ev.split} ({counted}) |"]
        lines += _eval_rows(ev, [f"| inference | {ev.speed_ms.get('inference', 0.0):.1f} ms/image |"])
    lines += ["", "| artifact | location |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in res.artifacts.items()]
    if res.run_id:
        lines.append(f"| MLflow run | `{res.run_id}` |")
    if res.aliases:
        lines.append(f"| aliases | {', '.join(res.aliases)} |")
    steps = ", ".join(f"{s.name} {s.status}" + (f" {s.seconds:.1f}s" if s.status == "done" else "") for s in res.steps)
    lines += ["", f"Steps: {steps}"]
    return "\n".join(lines) + "\n"

"""Two model versions evaluated on the same split of one dataset version, cached."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field, PrivateAttr

from .. import registry
from ..datasets.catalog import Catalog
from ..datasets.manifest import DatasetManifest
from ..datasets.materialize import file_stem
from ..errors import NotFoundError, ValidationError
from ..evaluation import CLASS_SCORE, LABELS, EvalResult, Evaluation, Stats, stats_from_bytes
from ..files import atomic_write_bytes, atomic_write_text, sha256_file
from ..settings import get_settings
from ..store import open_store


class MetricRow(BaseModel):
    metric: str
    a: float
    b: float
    change: float


class Comparison(BaseModel):
    a: str = Field(description="Ref of model A (the baseline, e.g. the champion).")
    b: str = Field(description="Ref of model B (the challenger).")
    data: str = Field(description="Dataset version whose split both were evaluated on.")
    split: str
    images: int
    rows: list[MetricRow]
    a_eval: EvalResult
    b_eval: EvalResult
    frozen_data: str | None = Field(default=None, description="The dataset's first version (N@1): its images of "
                                    "this split are the frozen set, the others the added set.")
    # Per-image results of both models and the frozen image keys (in memory only, for the gate)
    _stats: tuple[Stats, Stats] | None = PrivateAttr(default=None)
    _frozen: frozenset[str] | None = PrivateAttr(default=None)

    def row(self, metric: str) -> MetricRow:
        return next(r for r in self.rows if r.metric == metric)

    @property
    def task(self) -> str:
        return self.a_eval.task

    @property
    def metric(self) -> str:
        """The label of the metric the gate compares (mAP50-95, or top-1)."""
        return self.a_eval.primary_label

    def with_stats(self, a: Stats, b: Stats, frozen: frozenset[str] | None) -> Comparison:
        self._stats, self._frozen = (a, b), frozen
        return self

    @property
    def stats(self) -> tuple[Stats, Stats] | None:
        return self._stats

    @property
    def frozen_images(self) -> frozenset[str] | None:
        return self._frozen


def _cache_key(onnx_sha: str, manifest: DatasetManifest, split: str) -> str:
    from ..training.evaluate import evaluator_version  # no ultralytics import: only hashes files

    payload = f"{onnx_sha}:{manifest.content_hash}:{split}:{evaluator_version()}"
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def cached_evaluation(model: registry.ResolvedModel, manifest: DatasetManifest, split: str) -> Evaluation:
    """Evaluation is pure in (ONNX bytes, dataset content, split, evaluator code and libraries):
    cache it, record and per-image results (detection matches or classification top-k), so the
    loop and CI do not re-evaluate the champion."""
    onnx_sha = model.tags.get(registry.TAG_ONNX_SHA256) or sha256_file(model.onnx_path)
    base = get_settings().cache_dir / "eval" / _cache_key(onnx_sha, manifest, split)
    record, matches = base.with_suffix(".json"), base.with_suffix(".npz")
    if record.exists() and matches.exists():
        try:
            return Evaluation(EvalResult.model_validate_json(record.read_text()),
                              stats_from_bytes(matches.read_bytes()))
        except (ValueError, OSError, KeyError):
            pass  # a damaged entry: evaluate again
    from ..training.evaluate import run_evaluation  # lazy: pulls ultralytics

    ev = run_evaluation(model.onnx_path, manifest, split)
    atomic_write_bytes(matches, ev.stats.to_bytes())  # matches first: a record is only read beside them
    atomic_write_text(record, ev.result.model_dump_json())
    return ev


def evaluate_cached(model: registry.ResolvedModel, manifest: DatasetManifest, split: str) -> EvalResult:
    return cached_evaluation(model, manifest, split).result


def check_same_task(a_task: str, b_task: str, a: str = "A", b: str = "B") -> None:
    if a_task != b_task:
        raise ValidationError(f"cannot compare {a} ({a_task}) with {b} ({b_task}): "
                              "both models must have the same task")


def comparison_rows(a: EvalResult, b: EvalResult) -> list[MetricRow]:
    """The task's headline metrics, then per class (matched by name) AP50-95 (detect) or accuracy (classify)."""
    check_same_task(a.task, b.task, a.model, b.model)
    ha, hb = a.headline(), b.headline()
    rows = [MetricRow(metric=LABELS[k], a=ha[k], b=hb[k], change=hb[k] - ha[k]) for k in ha]
    label, b_scores = CLASS_SCORE[a.task], b.class_scores()
    for name, score in a.class_scores().items():
        if name in b_scores:
            rows.append(MetricRow(metric=f"{label} {name}", a=score, b=b_scores[name], change=b_scores[name] - score))
    return rows


def default_dataset(*models: registry.ResolvedModel) -> str:
    """The newest dataset version any of the models was trained on: its test split is a
    superset of the older versions' test splits (the split is a function of the image hash)."""
    refs = [m.card.dataset for m in models]
    refs = [r for r in refs if "@" in r]
    if not refs:
        raise ValidationError("cannot tell which dataset to compare on: pass --data N@V")
    return max(refs, key=lambda r: int(r.rsplit("@", 1)[1]) if r.rsplit("@", 1)[1].isdigit() else -1)


def frozen_keys(catalog: Catalog, manifest: DatasetManifest, split: str) -> tuple[str | None, frozenset[str] | None]:
    """The first version of the dataset and the image keys of its ``split`` (the frozen set)."""
    try:
        first = manifest if manifest.version == 1 else catalog.load(f"{manifest.name}@1")
    except (NotFoundError, ValidationError):
        return None, None
    return first.ref, frozenset(file_stem(i.sha256) for i in first.by_split(split))  # type: ignore[arg-type]


def compare(a_ref: str, b_ref: str, data: str | None = None, split: str = "test") -> Comparison:
    a = registry.resolve_model(a_ref)
    b = registry.resolve_model(b_ref)
    check_same_task(a.card.task, b.card.task, a.ref, b.ref)
    catalog = Catalog(open_store())
    manifest = catalog.load(data or default_dataset(a, b))
    if manifest.task != a.card.task:
        raise ValidationError(f"cannot compare {a.card.task} models on {manifest.ref}, a {manifest.task} dataset")
    if not manifest.by_split(split):  # type: ignore[arg-type]
        raise ValidationError(f"dataset {manifest.ref} has no {split} images to compare on")
    ea, eb = cached_evaluation(a, manifest, split), cached_evaluation(b, manifest, split)
    first, frozen = frozen_keys(catalog, manifest, split)
    cmp = Comparison(a=a.ref, b=b.ref, data=manifest.ref, split=split, images=ea.result.images,
                     rows=comparison_rows(ea.result, eb.result), a_eval=ea.result, b_eval=eb.result, frozen_data=first)
    return cmp.with_stats(ea.stats, eb.stats, frozen)

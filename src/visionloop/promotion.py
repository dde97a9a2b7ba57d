"""Compare two model versions on one frozen test split, gate a promotion, roll back.

Both models are evaluated by the same function on the same images (the test split of one
dataset version; the hash split keeps it free of training images for every version), so
"better" means better on identical data. The gate (``gate:`` in visionloop.yaml) asks for a
minimum gain in mAP50-95 and forbids any class losing more than ``max_class_drop`` AP50-95.

The champion lineage is the registry's alias history (:mod:`visionloop.registry.aliases`):
promote pushes, rollback pops, so a rollback always restores the champion before the current
one, even after several moves. A forced promotion is recorded on the version's tags.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from . import registry
from .config_file import load_section
from .datasets.catalog import Catalog
from .datasets.manifest import DatasetManifest
from .errors import ValidationError
from .evaluation import HEADLINE, LABELS, EvalResult
from .files import atomic_write_text, sha256_file
from .settings import get_settings
from .store import open_store

FORCED_TAG = "visionloop.promotion.forced"
PROMOTED_TAG = "visionloop.promotion.at"
GATE_TAG = "visionloop.promotion.gate"
ROLLED_BACK_TAG = "visionloop.rolled_back_at"


class Gate(BaseModel):
    min_delta: float = Field(default=0.0, description="Challenger mAP50-95 minus champion's must be at least this.")
    max_class_drop: float = Field(default=0.05, ge=0.0, description="No class may lose more AP50-95 than this.")

    @classmethod
    def load(cls, config: Path | None = None) -> Gate:
        return load_section(cls, config, "gate")


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

    def row(self, metric: str) -> MetricRow:
        return next(r for r in self.rows if r.metric == metric)


class GateDecision(BaseModel):
    passed: bool
    gate: Gate
    delta: float = Field(description="B minus A, mAP50-95.")
    worst_class: str | None = None
    worst_class_drop: float = 0.0
    reasons: list[str] = Field(default_factory=list, description="Why it failed (empty when it passed).")

    def summary(self) -> str:
        head = f"mAP50-95 change {self.delta:+.4f} (min {self.gate.min_delta:+.4f})"
        if self.worst_class is not None:
            head += f", worst class drop {self.worst_class_drop:.4f} ({self.worst_class}; max {self.gate.max_class_drop:.4f})"
        return head


class PromotionResult(BaseModel):
    name: str
    version: str
    previous: str | None
    promoted: bool
    forced: bool = False
    decision: GateDecision | None = None
    comparison: Comparison | None = None
    history: list[str] = Field(default_factory=list)


class RollbackResult(BaseModel):
    name: str
    from_version: str
    to_version: str
    history: list[str]


# -- evaluation -------------------------------------------------------------------------------
def evaluate_cached(model: registry.ResolvedModel, manifest: DatasetManifest, split: str) -> EvalResult:
    """Evaluation is pure in (ONNX bytes, dataset content, split): cache it so the loop and CI
    do not re-evaluate the champion on every comparison."""
    from .training.evaluate import evaluate_model  # lazy: pulls ultralytics

    onnx_sha = model.tags.get(registry.TAG_ONNX_SHA256) or sha256_file(model.onnx_path)
    key = hashlib.sha256(f"{onnx_sha}:{manifest.content_hash}:{split}".encode()).hexdigest()[:32]
    path = get_settings().cache_dir / "eval" / f"{key}.json"
    if path.exists():
        try:
            return EvalResult.model_validate_json(path.read_text())
        except ValueError:
            pass
    res = evaluate_model(model.onnx_path, manifest, split, imgsz=model.imgsz or None)
    atomic_write_text(path, res.model_dump_json())
    return res


def comparison_rows(a: EvalResult, b: EvalResult) -> list[MetricRow]:
    """Headline metrics, then AP50-95 per class (matched by class name)."""
    rows = [MetricRow(metric=LABELS[k], a=getattr(a, k), b=getattr(b, k), change=getattr(b, k) - getattr(a, k))
            for k in HEADLINE]
    b_ap = {c.name: c.ap50_95 for c in b.per_class}
    for c in a.per_class:
        if c.name in b_ap:
            rows.append(MetricRow(metric=f"AP50-95 {c.name}", a=c.ap50_95, b=b_ap[c.name], change=b_ap[c.name] - c.ap50_95))
    return rows


def default_dataset(*models: registry.ResolvedModel) -> str:
    """The newest dataset version any of the models was trained on: its test split is a
    superset of the older versions' test splits (the split is a function of the image hash)."""
    refs = [m.card.dataset for m in models]
    refs = [r for r in refs if "@" in r]
    if not refs:
        raise ValidationError("cannot tell which dataset to compare on: pass --data N@V")
    return max(refs, key=lambda r: int(r.rsplit("@", 1)[1]) if r.rsplit("@", 1)[1].isdigit() else -1)


def compare(a_ref: str, b_ref: str, data: str | None = None, split: str = "test") -> Comparison:
    a = registry.resolve_model(a_ref)
    b = registry.resolve_model(b_ref)
    manifest = Catalog(open_store()).load(data or default_dataset(a, b))
    if not manifest.by_split(split):  # type: ignore[arg-type]
        raise ValidationError(f"dataset {manifest.ref} has no {split} images to compare on")
    ea, eb = evaluate_cached(a, manifest, split), evaluate_cached(b, manifest, split)
    return Comparison(a=a.ref, b=b.ref, data=manifest.ref, split=split, images=ea.images,
                      rows=comparison_rows(ea, eb), a_eval=ea, b_eval=eb)


def decide(cmp: Comparison, gate: Gate) -> GateDecision:
    delta = cmp.row("mAP50-95").change
    drops = [(r.a - r.b, r.metric.removeprefix("AP50-95 ")) for r in cmp.rows if r.metric.startswith("AP50-95 ")]
    worst_drop, worst = max(drops) if drops else (0.0, None)
    reasons = []
    if delta < gate.min_delta:
        reasons.append(f"mAP50-95 changed by {delta:+.4f}, the gate asks for at least {gate.min_delta:+.4f}")
    if worst is not None and worst_drop > gate.max_class_drop:
        reasons.append(f"class {worst!r} lost {worst_drop:.4f} AP50-95, the gate allows {gate.max_class_drop:.4f}")
    dropped = worst is not None and worst_drop > 0  # name a class only when one lost AP
    return GateDecision(passed=not reasons, gate=gate, delta=delta, worst_class=worst if dropped else None,
                        worst_class_drop=worst_drop if dropped else 0.0, reasons=reasons)


# -- champion lineage -------------------------------------------------------------------------
def champion_history(name: str) -> list[str]:
    """Champions oldest first; the last one is the current champion."""
    return registry.lineage(name, registry.CHAMPION)


def promote(ref: str, *, force: bool = False, gate: Gate | None = None, data: str | None = None) -> PromotionResult:
    """Move ``champion`` to ``ref`` when it beats the current champion under the gate.

    Returns ``promoted=False`` with the reasons when the gate refuses (nothing changes);
    ``force`` promotes anyway and records that on the version.
    """
    mv = registry.resolve_version(ref)
    name, version = mv.name, mv.version
    gate = gate or Gate.load()
    history = champion_history(name)
    current = history[-1] if history else None
    if current == version:  # nothing to do (CI promotes on every merge, even without a new version)
        return PromotionResult(name=name, version=version, previous=current, promoted=False, history=history)
    cmp = decision = None
    if current is not None:
        cmp = compare(f"{name}/{current}", f"{name}/{version}", data)
        decision = decide(cmp, gate)
        if not decision.passed and not force:
            return PromotionResult(name=name, version=version, previous=current, promoted=False,
                                   decision=decision, comparison=cmp, history=history)
    forced = bool(force and decision is not None and not decision.passed)
    tags = {PROMOTED_TAG: datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if decision is not None:
        tags[GATE_TAG] = (f"{'passed' if decision.passed else 'refused'}: mAP50-95 {decision.delta:+.5f} "
                          f"on {cmp.data if cmp else '-'}")  # display only; the decision is returned
    if forced:
        tags[FORCED_TAG] = "; ".join(decision.reasons)  # type: ignore[union-attr]
    registry.set_version_tags(name, version, tags)
    registry.set_alias(name, registry.CHAMPION, version)
    if registry.get_alias(name, registry.CHALLENGER) == version:  # it is no longer a challenger
        registry.delete_alias(name, registry.CHALLENGER)
    history = [*history, version]
    return PromotionResult(name=name, version=version, previous=current, promoted=True, forced=forced,
                           decision=decision, comparison=cmp, history=history)


def rollback(name: str) -> RollbackResult:
    """Restore the champion before the current one (and forget the current one's turn)."""
    change = registry.rollback_alias(name, registry.CHAMPION)
    registry.set_version_tags(name, change.previous, {ROLLED_BACK_TAG: change.at})
    return RollbackResult(name=name, from_version=change.previous or "", to_version=change.version,
                          history=champion_history(name))

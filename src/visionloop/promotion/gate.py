"""The promotion gate: a gain that noise cannot explain, no collapsed class, no regression on
the frozen original test images. The metric is the task's primary one (``EvalResult.primary``):
mAP50-95 for detection, top-1 for classification; a class's score is its AP50-95 or its accuracy."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from ..config_file import load_section
from ..evaluation import CLASS_SCORE, Stats
from .bootstrap import aligned, paired_interval, primary_metric
from .compare import Comparison

log = logging.getLogger(__name__)


class Gate(BaseModel):
    min_delta: float = Field(default=0.0, description=(
        "The lower bound of the interval of challenger minus champion mAP50-95 (detection) or top-1 "
        "(classification) must be strictly above this: with 0, a challenger no better than the champion "
        "(interval [0, 0]) is refused."))
    max_class_drop: float = Field(default=0.05, ge=0.0, description=(
        "No class may lose more than this: AP50-95 (detection) or accuracy on its test images "
        "(classification); nor the frozen test images more of the gate's metric."))
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0, description="Coverage of the bootstrap interval.")
    resamples: int = Field(default=1000, ge=0, description="Bootstrap resamples of the test images "
                           "(0: no bootstrap, the interval is the point estimate).")
    seed: int = Field(default=0, description="Seed of the resampling (the same comparison gives the same interval).")
    max_quantization_drop: float = Field(default=0.01, ge=-1.0, le=1.0, description=(
        "`models quantize` registers an int8 version only when its mAP50-95 (top-1) on the evaluation "
        "split is at most this much below the fp32 version's (a negative value demands a gain)."))

    @classmethod
    def load(cls, config: Path | None = None) -> Gate:
        return load_section(cls, config, "gate")


def fmt_interval(iv: tuple[float, float] | None) -> str:
    return f"[{iv[0]:+.4f}, {iv[1]:+.4f}]" if iv is not None else "-"


class SetResult(BaseModel):
    """The gate's metric (mAP50-95 or top-1) of both models on one set of test images."""

    images: int
    champion: float
    challenger: float
    delta: float
    interval: tuple[float, float] | None = None


class GateDecision(BaseModel):
    passed: bool
    gate: Gate
    metric: str = Field(default="mAP50-95", description="The metric compared: mAP50-95 (detect) or top-1 (classify).")
    delta: float = Field(description="B minus A of the metric, on all the compared images.")
    interval: tuple[float, float] = Field(description="(low, high) of B minus A of the metric at gate.confidence.")
    bootstrap: bool = Field(default=True, description="False: no per-image data (or 0 resamples), the interval "
                            "is the point estimate.")
    frozen: SetResult | None = Field(default=None, description="The test images of the dataset's first version.")
    added: SetResult | None = Field(default=None, description="The test images added since.")
    frozen_data: str | None = None
    worst_class: str | None = None
    worst_class_drop: float = 0.0
    reasons: list[str] = Field(default_factory=list, description="Why it failed (empty when it passed).")

    def interval_text(self) -> str:
        what = f"{self.gate.confidence:.0%} interval" if self.bootstrap else "no interval, point estimate"
        return f"{fmt_interval(self.interval)} ({what})"

    def summary(self) -> str:
        head = (f"{self.metric} change {self.delta:+.4f}, {self.interval_text()}, lower bound must exceed "
                f"{self.gate.min_delta:+.4f}")
        for name, s in (("frozen", self.frozen), ("added", self.added)):
            if s is not None:
                head += f"; {name} {s.images} images {s.delta:+.4f} {fmt_interval(s.interval)}"
        if self.worst_class is not None:
            head += f"; worst class drop {self.worst_class_drop:.4f} ({self.worst_class}; max {self.gate.max_class_drop:.4f})"
        return head


def set_result(a: Stats, b: Stats, keys: set[str], gate: Gate) -> SetResult | None:
    """Both models on the images of ``keys`` (None when none of them was evaluated)."""
    a, b = aligned(a.subset(keys), b.subset(keys))
    if not a.images:
        return None
    ones = np.ones((1, len(a.images)))
    champ, chall = float(primary_metric(a, ones)[0]), float(primary_metric(b, ones)[0])
    interval = None
    if gate.resamples:
        _, low, high = paired_interval(a, b, confidence=gate.confidence, resamples=gate.resamples, seed=gate.seed)
        interval = (low, high)
    return SetResult(images=len(a.images), champion=champ, challenger=chall, delta=chall - champ, interval=interval)


def decide(cmp: Comparison, gate: Gate) -> GateDecision:
    metric, class_score = cmp.metric, CLASS_SCORE[cmp.task]
    delta = cmp.row(metric).change
    interval, frozen, added, bootstrap = (delta, delta), None, None, False
    t0 = time.perf_counter()
    if cmp.stats is not None and gate.resamples:
        a, b = aligned(*cmp.stats)
        _, low, high = paired_interval(a, b, confidence=gate.confidence, resamples=gate.resamples, seed=gate.seed)
        interval, bootstrap = (low, high), True
    if cmp.stats is not None and cmp.frozen_images is not None:
        a, b = cmp.stats
        frozen_keys = set(cmp.frozen_images) & set(a.images)
        frozen = set_result(a, b, frozen_keys, gate)
        added = set_result(a, b, set(a.images) - frozen_keys, gate)
    log.debug("gate bootstrap: %.2fs", time.perf_counter() - t0)

    reasons = []
    if not interval[0] > gate.min_delta:
        reasons.append(f"{metric} changed by {delta:+.4f}, interval {fmt_interval(interval)}; the gate asks for a "
                       f"lower bound above {gate.min_delta:+.4f}")
    prefix = f"{class_score} "
    drops = [(r.a - r.b, r.metric.removeprefix(prefix)) for r in cmp.rows if r.metric.startswith(prefix)]
    worst_drop, worst = max(drops) if drops else (0.0, None)
    if worst is not None and worst_drop > gate.max_class_drop:
        reasons.append(f"class {worst!r} lost {worst_drop:.4f} {class_score}, "
                       f"the gate allows {gate.max_class_drop:.4f}")
    if frozen is not None and -frozen.delta > gate.max_class_drop:
        reasons.append(f"the frozen test images ({cmp.frozen_data}, {frozen.images}) lost {-frozen.delta:.4f} "
                       f"{metric}, the gate allows {gate.max_class_drop:.4f}")
    dropped = worst is not None and worst_drop > 0  # name a class only when one lost some score
    return GateDecision(passed=not reasons, gate=gate, metric=metric, delta=delta, interval=interval,
                        bootstrap=bootstrap, frozen=frozen, added=added, frozen_data=cmp.frozen_data,
                        worst_class=worst if dropped else None, worst_class_drop=worst_drop if dropped else 0.0,
                        reasons=reasons)

"""Paired bootstrap of the gate's metric over test images, vectorized: mAP50-95 for detection,
top-1 for classification.

A resample draws the test images with replacement; image ``i`` drawn ``w_i`` times is the same
as weighting its detections and targets by ``w_i``. The detections' order by confidence does
not depend on the weights, so one sort serves every resample, and ultralytics' AP
(``ap_per_class``: cumulative TP/FP, the precision envelope, 101-point interpolation,
trapezoid) becomes array arithmetic over all resamples at once. With every weight 1 it is
``ap_per_class`` exactly, and so is every resample (tests/test_gate.py checks it against
ultralytics written out image by image), up to the order of equal confidences, which
ultralytics' unstable sort leaves open anyway. Top-1 on a resample is the weighted share of
images classified right.
Both models are scored on the same resamples: the interval is of the paired difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ValidationError
from ..evaluation import ClassifyStats, MatchStats, Stats

AP_X = np.linspace(0, 1, 101)  # ultralytics' (COCO's) 101 recall points
_STEP = np.diff(AP_X) / 2
_GRID_WEIGHT_BELOW = np.concatenate([[0.0], np.cumsum(np.r_[_STEP, 0.0] + np.r_[0.0, _STEP])])  # trapezoid weights
_CELLS = 4_000_000  # array elements per chunk of resamples (memory stays ~100 MB)


@dataclass(frozen=True)
class _ClassCurve:
    counts: np.ndarray  # (N, G): detections of each image in each point of the curve
    tp: np.ndarray  # (G, T) float64: whether the point is a true positive at each IoU threshold
    targets: np.ndarray  # (N,) the class's targets in each image


def _class_curves(stats: MatchStats) -> list[_ClassCurve]:
    """Per class, the detections by descending confidence as points of its PR curve, shrunk
    without changing AP: false positives after the last true positive are dropped (most of
    conf 0.001's), and each run of false positives becomes one point, since only the count a
    run adds before the next true positive moves the interpolated envelope."""
    order = np.argsort(-stats.conf)  # the sort ap_per_class does
    cls, tp, img = stats.pred_cls[order], stats.tp[order], stats.det_image[order]
    n = len(stats.images)
    curves = []
    for c in range(stats.nc):
        sel = np.flatnonzero(cls == c)
        hits = np.flatnonzero(tp[sel, 0])  # a TP at any threshold is one at IoU 0.50
        sel = sel[: hits[-1] + 1] if len(hits) else sel[:0]
        is_tp = tp[sel, 0]
        point = np.cumsum(is_tp | np.r_[True, is_tp[:-1]]) - 1  # a TP is a point; so is each run of FPs
        g = int(point[-1]) + 1 if len(sel) else 0
        counts = np.zeros((n, g))
        np.add.at(counts, (img[sel], point), 1.0)
        tp_g = np.zeros((g, tp.shape[1]))
        tp_g[point[is_tp]] = tp[sel][is_tp]
        targets = np.bincount(stats.target_image[stats.target_cls == c], minlength=n).astype(np.float64)
        curves.append(_ClassCurve(counts, tp_g, targets))
    return curves


def _class_ap(curve: _ClassCurve, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP at each IoU threshold (B, T) of one class under image ``weights`` (B, N); and whether
    the class has targets in each resample (B,) (a class without any is left out of the mean).

    ultralytics interpolates the precision envelope at 101 recall points and integrates with
    the trapezoid rule. Between two true positives the envelope is flat (a true positive's
    precision is at least that of the point before it), so the interpolated value at a recall
    x is the envelope at the first point whose recall exceeds x, and the integral is each
    point's envelope times the trapezoid weight of the grid points it answers for."""
    b, (g, n_thr) = weights.shape[0], curve.tp.shape
    n_l = weights @ curve.targets
    if g == 0:
        return np.zeros((b, n_thr)), n_l > 0
    w = weights @ curve.counts  # (B, G): each point's weight in each resample
    tpc = np.cumsum(w[:, None, :] * curve.tp.T[None], axis=2)  # (B, T, G)
    seen = np.cumsum(w, axis=1)[:, None, :]  # tpc + fpc, exact: the weights are whole numbers
    recall = tpc / (n_l[:, None, None] + 1e-16)
    precision = np.zeros_like(tpc)  # 0/0 (points drawn 0 times before any drawn one): 0, below the envelope
    np.divide(tpc, seen, out=precision, where=np.broadcast_to(seen > 0, tpc.shape))
    envelope = np.maximum.accumulate(precision[..., ::-1], axis=2)[..., ::-1]
    below = _GRID_WEIGHT_BELOW[np.searchsorted(AP_X, recall, side="left")]  # weight of grid points x < recall
    return (envelope * np.diff(below, axis=2, prepend=0.0)).sum(2), n_l > 0


def map50_95(stats: MatchStats, weights: np.ndarray) -> np.ndarray:
    """mAP50-95 (mean over the classes with targets) for each row of image ``weights`` (B, N)."""
    curves = _class_curves(stats)
    out = np.empty(weights.shape[0])
    d = max((c.tp.shape[0] for c in curves), default=1)
    step = max(1, _CELLS // (max(d, 1) * stats.tp.shape[1] + 1))
    for s in range(0, weights.shape[0], step):
        w = weights[s: s + step]
        total, present = np.zeros(len(w)), np.zeros(len(w))
        for curve in curves:
            ap, has = _class_ap(curve, w)
            total += ap.mean(1) * has
            present += has
        out[s: s + step] = np.divide(total, present, out=np.zeros(len(w)), where=present > 0)
    return out


def top1(stats: ClassifyStats, weights: np.ndarray) -> np.ndarray:
    """Top-1 accuracy for each row of image ``weights`` (B, N): the weighted share of images whose
    top class is the true one (with every weight 1, the evaluation's top-1)."""
    total = weights.sum(1)
    right = weights @ stats.correct().astype(np.float64)
    return np.divide(right, total, out=np.zeros(len(weights)), where=total > 0)


def primary_metric(stats: Stats, weights: np.ndarray) -> np.ndarray:
    """The gate's metric (``EvalResult.primary``) for each row of ``weights``: top-1 or mAP50-95."""
    return top1(stats, weights) if isinstance(stats, ClassifyStats) else map50_95(stats, weights)


def resample_weights(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_images) draw counts: each row is one bootstrap sample of the images."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=resamples).astype(np.float64)


def aligned(a: Stats, b: Stats) -> tuple[Stats, Stats]:
    """Both on the images both were evaluated on, in the same order (keys are sorted file stems)."""
    if type(a) is not type(b):
        raise ValidationError("cannot compare a detection evaluation with a classification one")
    if a.images != b.images:
        common = set(a.images) & set(b.images)
        a, b = a.subset(common), b.subset(common)
    if a.images != b.images:
        raise ValueError("the two evaluations list their images in different orders")
    return a, b


def paired_interval(a: Stats, b: Stats, *, confidence: float, resamples: int,
                    seed: int) -> tuple[float, float, float]:
    """(point, low, high) of b minus a of the gate's metric over the images: point on the images
    as they are, the interval the central ``confidence`` share of the resampled differences."""
    a, b = aligned(a, b)
    n = len(a.images)
    if n == 0:
        return 0.0, 0.0, 0.0
    ones = np.ones((1, n))
    point = float(primary_metric(b, ones)[0] - primary_metric(a, ones)[0])
    w = resample_weights(n, resamples, seed)
    deltas = primary_metric(b, w) - primary_metric(a, w)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1.0 - tail])
    return point, float(low), float(high)

"""Per-image uncertainty scores: how much labeling an image would teach the model.

Computed where a prediction is made (the server's capture, ``label push``) from what the model
said, so ranking the inbox needs no model. Every score is "higher = more worth labeling", in
[0, 1] per box; an image aggregates its boxes (``max`` / ``mean`` / ``sum``). An image without
a box is maximally uncertain (the model may have missed everything) except for
``close_to_threshold``, which measures boxes near the decision threshold and has none to measure.

Also the cheap, model-free image signals selection uses: a difference hash for near-duplicates
and a thumbnail embedding for diversity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from ..errors import ValidationError
from ..predictions import Detections, box_iou

if TYPE_CHECKING:  # inbox stores ImageScores on its records: no import cycle at run time
    from .inbox import CaptureRecord

Aggregate = Literal["max", "mean", "sum"]
AGGREGATES: tuple[str, ...] = ("max", "mean", "sum")
# mean, not max: at a low conf floor every image has some background box near the floor, so the max
# of 1 - conf ranks noise. Predicting which RPS images a model misses at conf 0.25 (AUC, 0.5 =
# chance; bench/active_learning.py's pool, a 30-epoch model): max 0.52, mean 0.83.
DEFAULT_AGGREGATE: Aggregate = "mean"
SCORES: tuple[str, ...] = ("least_confidence", "margin", "entropy", "close_to_threshold")  # the rankable ones
DEFAULT_THRESHOLD = 0.25  # the server's default confidence threshold (serving PredictParams.conf)


class ChoiceError(ValidationError, ValueError):
    """An unknown name or a bad number: a ValueError for library callers, one line for the CLI."""


def check_choice(kind: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ChoiceError(f"unknown {kind} {value!r} (one of {', '.join(valid)})")


class ImageScores(BaseModel):
    """One image's scores (stored on a capture record, so ranking never re-runs the model)."""

    least_confidence: float
    margin: float
    entropy: float
    close_to_threshold: float
    no_detection: bool
    detection_count: int
    aggregate: Aggregate = "max"
    classes: list[int] = Field(default_factory=list, description="Predicted class ids (one per box; classify: top-1).")

    def value(self, name: str) -> float:
        """The score called ``name`` (one of :data:`SCORES`)."""
        check_choice("score", name, SCORES)
        return float(getattr(self, name))


def _agg(values: np.ndarray, aggregate: str) -> float:
    return float({"max": np.max, "mean": np.mean, "sum": np.sum}[aggregate](values))


def _norm_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of each row (made a distribution) over log(width): 0 one-hot, 1 uniform."""
    total = p.sum(axis=1, keepdims=True)
    p = np.where(total > 0, p / np.where(total > 0, total, 1), 1.0 / p.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return np.clip(h / np.log(p.shape[1]), 0.0, 1.0)


def _margin(p: np.ndarray) -> np.ndarray:
    """1 - (top-1 - top-2) of each row."""
    top2 = -np.sort(-p, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def score_detections(conf: np.ndarray, class_scores: np.ndarray | None, threshold: float,
                     aggregate: Aggregate = DEFAULT_AGGREGATE, cls: np.ndarray | None = None) -> ImageScores:
    """Scores of one image's boxes. ``class_scores`` ``(N, nc)`` are the boxes' class score vectors
    (YOLO: independent sigmoids, normalized here for the entropy); without them (or with one class)
    margin and entropy use the binary vector (conf, 1 - conf)."""
    check_choice("aggregate", aggregate, AGGREGATES)
    conf = np.clip(np.asarray(conf, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if len(conf) == 0:
        return ImageScores(least_confidence=1.0, margin=1.0, entropy=1.0, close_to_threshold=0.0, no_detection=True,
                           detection_count=0, aggregate=aggregate, classes=[])
    if class_scores is not None:
        class_scores = np.clip(np.asarray(class_scores, dtype=np.float64).reshape(len(conf), -1), 0.0, 1.0)
    if cls is None:
        cls = np.argmax(class_scores, axis=1) if class_scores is not None and class_scores.shape[1] else np.zeros(0)
    classes = [int(c) for c in np.asarray(cls).reshape(-1)]
    vec = class_scores if class_scores is not None and class_scores.shape[1] >= 2 else np.stack([conf, 1 - conf], 1)
    spread = max(threshold, 1.0 - threshold)
    near = 1.0 - np.abs(conf - threshold) / spread if spread > 0 else np.ones_like(conf)
    return ImageScores(least_confidence=_agg(1.0 - conf, aggregate), margin=_agg(_margin(vec), aggregate),
                       entropy=_agg(_norm_entropy(vec), aggregate), close_to_threshold=_agg(near, aggregate),
                       no_detection=False, detection_count=len(conf), aggregate=aggregate, classes=classes)


def score_classification(probs: np.ndarray, *, class_ids: Sequence[int] | None = None,
                         num_classes: int | None = None) -> ImageScores:
    """Scores of one classification. ``probs`` is the softmax, or its top-k (``class_ids`` name
    them; default their positions): the missing mass is spread evenly over the
    ``num_classes - k`` unlisted classes (one bucket when ``num_classes`` is unknown) for the
    entropy. The decision threshold of an argmax is top-1 == top-2, so ``close_to_threshold``
    is the margin score."""
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if len(p) == 0:
        raise ChoiceError("score_classification needs at least one class probability")
    ids = list(class_ids) if class_ids is not None else list(range(len(p)))
    order = np.argsort(-p, kind="stable")
    p = p[order]
    rest = max(0.0, 1.0 - float(p.sum()))
    missing = (num_classes - len(p)) if num_classes else (1 if rest > 1e-6 else 0)
    full = np.concatenate([p, np.full(max(missing, 0), rest / missing if missing > 0 else 0.0)])
    margin = 1.0 - (p[0] - (p[1] if len(p) > 1 else 0.0))
    entropy = float(_norm_entropy(full[None])[0]) if len(full) > 1 else 0.0
    return ImageScores(least_confidence=float(1.0 - p[0]), margin=float(margin), entropy=entropy,
                       close_to_threshold=float(margin), no_detection=False, detection_count=0, aggregate="max",
                       classes=[int(ids[int(order[0])])])


def score_record(record: CaptureRecord, threshold: float = DEFAULT_THRESHOLD,
                 aggregate: Aggregate = DEFAULT_AGGREGATE) -> ImageScores:
    """Scores of a stored capture from what it keeps (its detections, or its classification ``top``).
    Records keep no class score vectors, so margin and entropy of boxes are the binary ones."""
    if record.top:
        return score_classification(np.array([t.confidence for t in record.top]),
                                    class_ids=[t.class_id for t in record.top],
                                    num_classes=len(record.classes) or None)
    return score_detections(np.array([d.confidence for d in record.detections], np.float64), None, threshold,
                            aggregate, cls=np.array([d.class_id for d in record.detections], np.int64))


# -- disagreement between two predictions of one image ------------------------------------------
def disagreement(a: Detections, b: Detections, iou: float = 0.5) -> float:
    """How much two predictions of one image (two models, or two augmentations) differ:
    1 - greedy same-class matches at IoU >= ``iou`` / the larger count; both empty → 0."""
    n = max(len(a), len(b))
    if n == 0:
        return 0.0
    if min(len(a), len(b)) == 0:
        return 1.0
    ious = box_iou(a.xyxy, b.xyxy)
    ious = np.where(np.asarray(a.cls)[:, None] == np.asarray(b.cls)[None, :], ious, -1.0)
    used_a, used_b, matches = set(), set(), 0
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        i, j = divmod(int(flat), ious.shape[1])
        if ious[i, j] < iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            matches += 1
    return 1.0 - matches / n


# -- model-free image signals ---------------------------------------------------------------------
def dhash(image: Image.Image, size: int = 8) -> int:
    """Difference hash (``size * size`` bits, 64 by default): is each pixel of a tiny grayscale
    copy brighter than its right neighbour. Survives resizing and re-encoding; near-duplicates
    (a burst of frames, a re-upload) are a few bits apart."""
    small = np.asarray(image.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    return int(sum(1 << i for i, bit in enumerate(bits.tolist()) if bit))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def thumbnail_embedding(image: Image.Image, side: int = 16) -> np.ndarray:
    """A cheap, deterministic embedding for diversity: a ``side`` x ``side`` RGB thumbnail with each
    channel standardized (so exposure and tint matter less than layout), L2-normalized, float32."""
    x = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BOX), dtype=np.float64)
    x = (x - x.mean(axis=(0, 1))) / (x.std(axis=(0, 1)) + 1e-6)
    v = x.reshape(-1)
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > 0 else v).astype(np.float32)

"""The typed record of "how good is this model on that split".

Computed by :func:`visionloop.training.evaluate.evaluate_model`; stored in the model version's
card (a JSON artifact beside its ONNX file), compared by the promotion gate and shown by the
CLI and reports. It lives below every package that reads it, so the registry and the gate can
use it without importing the training code. :class:`MatchStats` (detection) and
:class:`ClassifyStats` (classification) keep the per-image results behind the numbers, so the
gate can bootstrap over images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from .predictions import Task

HEADLINES: dict[str, tuple[str, ...]] = {"detect": ("map50", "map50_95", "precision", "recall"),
                                          "classify": ("top1", "top5")}
HEADLINE = HEADLINES["detect"]
PRIMARY = {"detect": "map50_95", "classify": "top1"}  # the metric the gate compares
LABELS = {"map50": "mAP50", "map50_95": "mAP50-95", "precision": "precision", "recall": "recall",
          "top1": "top-1", "top5": "top-5"}
CLASS_SCORE = {"detect": "AP50-95", "classify": "accuracy"}  # what class_scores() holds, as shown


class ClassAP(BaseModel):
    name: str
    ap50: float
    ap50_95: float


class ClassAccuracy(BaseModel):
    """Classification: how many test images of this class there are and the share classified right."""

    name: str
    images: int
    accuracy: float


class EvalResult(BaseModel):
    model: str = Field(description="The ONNX file evaluated.")
    data: str = Field(description="Dataset ref (N@V) or data.yaml path.")
    split: str = Field(description="The split evaluated (test unless asked otherwise).")
    task: Task = "detect"
    images: int
    instances: int = Field(description="Boxes (detect) or images (classify) in the split.")
    imgsz: int
    map50: float = 0.0
    map50_95: float = 0.0
    precision: float = 0.0
    recall: float = 0.0
    per_class: list[ClassAP] = Field(default_factory=list)
    top1: float | None = Field(default=None, description="Classification: share of images whose top class is right.")
    top5: float | None = Field(default=None, description="Classification: share whose class is among the top 5.")
    per_class_accuracy: list[ClassAccuracy] = Field(default_factory=list)
    speed_ms: dict[str, float] = Field(description="Per image: preprocess, inference, postprocess.")

    @property
    def primary(self) -> str:
        """The headline metric's key: what the gate compares (mAP50-95, or top-1)."""
        return PRIMARY[self.task]

    @property
    def primary_label(self) -> str:
        return LABELS[self.primary]

    @property
    def primary_value(self) -> float:
        return float(getattr(self, self.primary) or 0.0)

    def headline(self) -> dict[str, float]:
        return {k: float(getattr(self, k) or 0.0) for k in HEADLINES[self.task]}

    def class_scores(self) -> dict[str, float]:
        """Per class, the score a class-drop check compares: AP50-95, or accuracy."""
        if self.task == "classify":
            return {c.name: c.accuracy for c in self.per_class_accuracy}
        return {c.name: c.ap50_95 for c in self.per_class}

    def metric_tags(self) -> dict[str, str]:
        """Registry tags for search and display only (``metrics.map50`` ...); the card holds the record."""
        tags = {f"metrics.{k}": f"{v:.5f}" for k, v in self.headline().items()}
        tags["metrics.inference_ms"] = f"{self.speed_ms.get('inference', 0.0):.3f}"
        tags["eval.split"] = self.split
        tags["eval.images"] = str(self.images)
        return tags

    def mlflow_metrics(self) -> dict[str, float]:
        out = {f"test/{k}": v for k, v in self.headline().items()}
        out["test/inference_ms"] = float(self.speed_ms.get("inference", 0.0))
        return out


IOU_THRESHOLDS = 10  # 0.50, 0.55, ... 0.95: the thresholds of mAP50-95


@dataclass(frozen=True, eq=False)
class MatchStats:
    """Per image, what the metric needs: each detection's confidence, class and whether it is a
    true positive at each IoU threshold, and each target's class. The gate resamples images
    from this without running the models again. Arrays are flat; ``det_image`` and
    ``target_image`` index ``images`` (image keys: file stems, ``sha256[:20]`` for a dataset)."""

    images: tuple[str, ...]
    nc: int
    det_image: np.ndarray  # (D,) int32
    conf: np.ndarray  # (D,) float32
    pred_cls: np.ndarray  # (D,) int32
    tp: np.ndarray  # (D, IOU_THRESHOLDS) bool
    target_image: np.ndarray  # (T,) int32
    target_cls: np.ndarray  # (T,) int32

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, images=np.array(self.images, dtype=str), nc=np.int64(self.nc),
                            **{k: getattr(self, k) for k in _ARRAYS})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MatchStats:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(tuple(str(s) for s in z["images"]), int(z["nc"]), **{k: z[k] for k in _ARRAYS})

    def subset(self, keys: set[str]) -> MatchStats:
        """Only the images whose key is in ``keys`` (renumbered, order kept)."""
        keep = np.array([k in keys for k in self.images], dtype=bool)
        new_index = np.cumsum(keep) - 1
        d, t = keep[self.det_image], keep[self.target_image]
        return MatchStats(tuple(k for k, kept in zip(self.images, keep) if kept), self.nc,
                          new_index[self.det_image[d]].astype(np.int32), self.conf[d], self.pred_cls[d], self.tp[d],
                          new_index[self.target_image[t]].astype(np.int32), self.target_cls[t])


_ARRAYS = ("det_image", "conf", "pred_cls", "tp", "target_image", "target_cls")


@dataclass(frozen=True, eq=False)
class ClassifyStats:
    """Classification's per-image record: the true class and the model's top-k class ids (best
    first), so the gate can resample images for top-1 without running the models again."""

    images: tuple[str, ...]
    nc: int
    true_cls: np.ndarray  # (N,) int32
    topk: np.ndarray  # (N, K) int32, K = min(5, nc)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, images=np.array(self.images, dtype=str), nc=np.int64(self.nc), kind="classify",
                            true_cls=self.true_cls, topk=self.topk)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ClassifyStats:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(tuple(str(s) for s in z["images"]), int(z["nc"]), z["true_cls"], z["topk"])

    def subset(self, keys: set[str]) -> ClassifyStats:
        keep = np.array([k in keys for k in self.images], dtype=bool)
        return ClassifyStats(tuple(k for k, kept in zip(self.images, keep) if kept), self.nc,
                             self.true_cls[keep], self.topk[keep])

    def correct(self) -> np.ndarray:
        """(N,) bool: the top class is the true one."""
        return self.topk[:, 0] == self.true_cls if len(self.true_cls) else np.zeros(0, dtype=bool)


Stats = MatchStats | ClassifyStats


def stats_from_bytes(data: bytes) -> Stats:
    """Either kind, by what the file holds."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        kind = str(z["kind"]) if "kind" in z.files else "detect"
    return ClassifyStats.from_bytes(data) if kind == "classify" else MatchStats.from_bytes(data)


@dataclass(frozen=True, eq=False)
class Evaluation:
    """An evaluation's record and the per-image statistics it was computed from."""

    result: EvalResult
    stats: Stats

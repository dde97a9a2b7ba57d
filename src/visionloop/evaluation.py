"""The typed record of "how good is this model on that split".

Computed by :func:`visionloop.training.evaluate.evaluate_model`; stored in the model version's
card (a JSON artifact beside its ONNX file), compared by the promotion gate and shown by the
CLI and reports. It lives below every package that reads it, so the registry and the gate can
use it without importing the training code. :class:`MatchStats` keeps the per-image
matches behind the numbers, so the gate can bootstrap over images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

HEADLINE = ("map50", "map50_95", "precision", "recall")
LABELS = {"map50": "mAP50", "map50_95": "mAP50-95", "precision": "precision", "recall": "recall"}


class ClassAP(BaseModel):
    name: str
    ap50: float
    ap50_95: float


class EvalResult(BaseModel):
    model: str = Field(description="The ONNX file evaluated.")
    data: str = Field(description="Dataset ref (N@V) or data.yaml path.")
    split: str = Field(description="The split evaluated (test unless asked otherwise).")
    images: int
    instances: int
    imgsz: int
    map50: float
    map50_95: float
    precision: float
    recall: float
    per_class: list[ClassAP]
    speed_ms: dict[str, float] = Field(description="Per image: preprocess, inference, postprocess.")

    def headline(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in HEADLINE}

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
class Evaluation:
    """An evaluation's record and the per-image statistics it was computed from."""

    result: EvalResult
    stats: MatchStats

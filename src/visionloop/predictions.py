"""What a model says about an image, as one set of types every layer shares.

Two forms of one concept:

- :class:`Detections` — columnar numpy arrays (xyxy pixels, confidences, class ids) for the
  code that computes on boxes: NMS and scaling in the server, the ONNX parity check.
- :class:`Detection` — one typed record per box (class id and name, confidence, a
  :class:`PixelBox`) for everything that stores or sends a prediction: the HTTP API, the
  capture inbox, Label Studio pre-annotations.

``Detections.to_records`` / ``Detections.from_records`` are the only conversions between them.
Boxes here are pixel corners in the original image; dataset labels are normalized centre
boxes (:class:`visionloop.datasets.manifest.YoloBox`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

Task = Literal["detect", "classify"]
TASKS: tuple[str, ...] = ("detect", "classify")


def class_name(classes: Sequence[str], class_id: int) -> str:
    """The name of ``class_id``; its number as text when the model has no name for it."""
    return classes[class_id] if 0 <= class_id < len(classes) else str(class_id)


class PixelBox(BaseModel):
    """Corner coordinates in pixels of the original image (EXIF orientation applied)."""

    x1: float
    y1: float
    x2: float
    y2: float


class Detection(BaseModel):
    class_id: int
    class_name: str
    confidence: float
    box: PixelBox = Field(description="Pixel coordinates in the original image (EXIF orientation applied).")

    @model_validator(mode="before")
    @classmethod
    def _flat_box(cls, data: Any) -> Any:
        """Capture records written before the box was nested stored x1..y2 flat."""
        if isinstance(data, dict) and "box" not in data and "x1" in data:
            data = {**data, "box": {k: data[k] for k in ("x1", "y1", "x2", "y2")}}
        return data


class ClassScore(BaseModel):
    """One class of a classification answer (top-k)."""

    class_id: int
    class_name: str
    confidence: float


@dataclass(frozen=True)
class Detections:
    """Boxes of one image: xyxy pixels ``(N, 4)``, confidences ``(N,)``, class ids ``(N,)``."""

    xyxy: np.ndarray
    conf: np.ndarray
    cls: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> Detections:
        """From ``(N, 6)`` rows ``x1, y1, x2, y2, confidence, class_id`` (the NMS output)."""
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
        return cls(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64))

    @classmethod
    def from_records(cls, records: Sequence[Detection]) -> Detections:
        if not records:
            return cls.empty()
        return cls(np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in records], np.float32),
                   np.array([d.confidence for d in records], np.float32),
                   np.array([d.class_id for d in records], np.int64))

    def __len__(self) -> int:
        return int(self.conf.shape[0])

    def to_records(self, classes: Sequence[str], digits: int | None = None) -> list[Detection]:
        """Typed records; ``digits`` rounds for the wire (confidence to ``digits + 3``)."""
        out = []
        for (x1, y1, x2, y2), s, c in zip(self.xyxy.tolist(), self.conf.tolist(), self.cls.tolist()):
            if digits is not None:
                x1, y1, x2, y2, s = (round(x1, digits), round(y1, digits), round(x2, digits), round(y2, digits),
                                     round(s, digits + 3))
            out.append(Detection(class_id=int(c), class_name=class_name(classes, int(c)), confidence=float(s),
                                 box=PixelBox(x1=x1, y1=y1, x2=x2, y2=y2)))
        return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) → (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)

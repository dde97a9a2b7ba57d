"""What a model version is, as one typed record: the card (``model/card.json`` beside the ONNX).

The card is the source of truth (classes, input size, dataset, evaluation, parity). Version
tags are derived from it for search and display only (``models list``, the training cache
lookup by ``cache_key``); nothing parses structured data back out of a tag.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from ..evaluation import EvalResult
from ..predictions import TASKS, Task

CARD_FILE = "card.json"

# Version tags (all values are strings), derived from the card by search_tags().
TAG_DATASET = "dataset"  # N@V
TAG_MANIFEST_HASH = "manifest_hash"
TAG_IMGSZ = "imgsz"
TAG_TASK = "task"
TAG_GIT_COMMIT = "git_commit"
TAG_ONNX_SHA256 = "onnx_sha256"
TAG_CACHE_KEY = "cache_key"
TAG_BASE_MODEL = "base_model"
TAG_EPOCHS = "epochs"
TAG_PRECISION = "precision"  # int8 on a quantized sibling; absent (fp32) otherwise
TAG_QUANTIZED_FROM = "quantized_from"  # M/V of the fp32 version an int8 one was made from
METRIC_PREFIX = "metrics."  # metrics.map50, metrics.map50_95, metrics.precision, metrics.recall
_LEGACY_CLASSES = "classes"  # JSON list on versions registered before cards existed


class ParitySummary(BaseModel):
    """How closely the ONNX export reproduced the PyTorch model on a few images."""

    images: int
    compared: int = Field(description="Boxes (detect) or images (classify) compared between the two models.")
    ties: int = 0
    min_iou: float = 1.0
    max_conf_diff: float = Field(default=0.0, description="Largest confidence (classify: probability) difference.")


class ModelCard(BaseModel):
    task: Task
    classes: list[str]
    imgsz: int = Field(description="Training (and default serving) input size; 0 when unknown.")
    dataset: str = Field(default="", description="Dataset version trained on (N@V).")
    manifest_hash: str = ""
    cache_key: str = Field(default="", description="Hash of everything that defines the trained weights.")
    base_model: str = ""
    epochs: int = 0
    git_commit: str | None = None
    eval: EvalResult | None = Field(default=None, description="Evaluation on the dataset's frozen test split.")
    parity: ParitySummary | None = None
    precision: str = Field(default="fp32", description="fp32, or int8 for a quantized sibling version.")
    quantized_from: str | None = Field(default=None, description="The fp32 version (M/V) an int8 one was made from.")

    def search_tags(self) -> dict[str, str]:
        """The version tags for search and display (empty values left out)."""
        tags = {
            TAG_DATASET: self.dataset, TAG_MANIFEST_HASH: self.manifest_hash, TAG_CACHE_KEY: self.cache_key,
            TAG_TASK: self.task, TAG_IMGSZ: str(self.imgsz) if self.imgsz else "",
            TAG_BASE_MODEL: self.base_model, TAG_EPOCHS: str(self.epochs) if self.epochs else "",
            TAG_GIT_COMMIT: self.git_commit or "",
            TAG_PRECISION: self.precision if self.precision != "fp32" else "",
            TAG_QUANTIZED_FROM: self.quantized_from or "",
        }
        if self.eval is not None:
            tags.update(self.eval.metric_tags())
        return {k: v for k, v in tags.items() if v}

    @classmethod
    def from_legacy_tags(cls, tags: dict[str, str]) -> ModelCard:
        """A card for a version registered before cards existed (its metadata was in tags)."""
        try:
            classes = [str(c) for c in json.loads(tags.get(_LEGACY_CLASSES, "[]"))]
        except (json.JSONDecodeError, TypeError):
            classes = []
        imgsz, epochs = (int(tags[k]) if tags.get(k, "").isdigit() else 0 for k in (TAG_IMGSZ, TAG_EPOCHS))
        task = tags.get(TAG_TASK, "detect")
        return cls(task=task if task in TASKS else "detect", classes=classes, imgsz=imgsz,
                   dataset=tags.get(TAG_DATASET, ""), manifest_hash=tags.get(TAG_MANIFEST_HASH, ""),
                   cache_key=tags.get(TAG_CACHE_KEY, ""), base_model=tags.get(TAG_BASE_MODEL, ""), epochs=epochs,
                   git_commit=tags.get(TAG_GIT_COMMIT) or None)

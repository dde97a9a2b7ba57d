"""The typed record of "how good is this model on that split".

Computed by :func:`visionloop.training.evaluate.evaluate_model`; stored in the model version's
card (a JSON artifact beside its ONNX file), compared by the promotion gate and shown by the
CLI and reports. It lives below every package that reads it, so the registry and the gate can
use it without importing the training code.
"""

from __future__ import annotations

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

"""Pydantic request/response models: the HTTP contract, shown in the OpenAPI page at /docs.

A detection on the wire is :class:`visionloop.predictions.Detection` itself (re-exported
here), so the API, the capture inbox and the parity check share one record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..predictions import ClassScore, Detection, PixelBox, Task  # noqa: F401 (re-exported: the HTTP contract)

REF = "#/components/schemas/{model}"  # request schemas point at models already in the components


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. bad_image, not_found.")
    message: str = Field(description="One line a person can act on.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class ImageSize(BaseModel):
    width: int
    height: int


class Timing(BaseModel):
    decode: float = Field(description="Bytes to pixels, ms.")
    preprocess: float = Field(description="Letterbox / crop to the model input, ms.")
    inference: float = Field(description="onnxruntime session.run, ms.")
    postprocess: float = Field(description="NMS and scaling back to image pixels, ms.")
    total: float = Field(description="From request received to response built, ms.")


class Prediction(BaseModel):
    model: str
    version: str = Field(description="The model version that answered this request.")
    task: Task
    image: ImageSize
    detections: list[Detection] | None = Field(default=None, description="Detection models.")
    classes: list[ClassScore] | None = Field(default=None, description="Classification models: top-k.")
    timing_ms: Timing


class BatchItem(BaseModel):
    filename: str
    prediction: Prediction | None = None
    error: ErrorBody | None = None


class BatchResponse(BaseModel):
    model: str
    version: str
    results: list[BatchItem]


class CompareItem(BaseModel):
    model: str
    prediction: Prediction | None = None
    error: ErrorBody | None = None


class CompareResponse(BaseModel):
    image: ImageSize
    results: list[CompareItem]


class ModelStatus(BaseModel):
    name: str
    default: bool
    source: str = Field(description="How the model was named: a path, M/5 or M@alias.")
    state: Literal["loading", "ready", "failed"]
    version: str | None = None
    alias: str | None = None
    task: str | None = None
    classes: list[str] = Field(default_factory=list)
    input_size: list[int] | None = Field(default=None, description="[height, width] of the model input.")
    providers: list[str] = Field(default_factory=list)
    precision: str | None = Field(default=None, description="fp32, or int8 for a quantized version.")
    intra_threads: int | None = Field(default=None, description="onnxruntime intra-op threads of the session.")
    max_batch: int | None = Field(default=None, description="Most images per session run: 1 unbatched, more "
                                  "with --max-batch on a model whose batch dimension is dynamic.")
    batch_gain: float | None = Field(default=None, description="--batch-policy adaptive: images/s of batches of "
                                     "--max-batch over single runs, measured at load (the model is batched from "
                                     "1.11); null when not measured.")
    loaded_at: str | None = None
    last_error: str | None = Field(default=None, description="Why the latest load, reload or watcher poll failed "
                                   "(cleared by the next successful load).")
    last_error_at: str | None = None
    pinned: bool = Field(default=False, description="A manual reload named a version or file: the watcher leaves "
                         "this model alone until `{\"unpin\": true}`.")
    last_check_at: str | None = Field(default=None, description="The watcher's latest poll of the alias.")
    watch_errors: int = Field(default=0, description="Watcher polls that failed since start (it keeps polling).")


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelStatus]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    models: dict[str, str] = Field(description="Load state per model.")


class ReloadRequest(BaseModel):
    version: str | None = Field(default=None, description="Registry version to load, e.g. '5'.")
    path: str | None = Field(default=None, description="An .onnx file on the server to load instead.")
    unpin: bool = Field(default=False, description="Release a pin and load what the alias names now.")


class ReloadResponse(BaseModel):
    name: str
    previous_version: str | None
    version: str
    swapped: bool = Field(description="False when the resolved version is the one already serving.")
    classes_changed: bool = Field(default=False, description="The new version names different classes.")
    pinned: bool = Field(default=False, description="The model stays on this version until unpinned.")


class B64(BaseModel):
    b64: str = Field(description="The image, base64.")


class Instance(BaseModel):
    """One image of a ``:predict`` request: ``{"b64": ...}`` (TF-Serving, KServe v1) or Cloud ML's
    ``{"image_bytes": {"b64": ...}}``."""

    b64: str | None = None
    image_bytes: B64 | None = None

    def data(self) -> str | None:
        return self.b64 if self.b64 is not None else self.image_bytes.b64 if self.image_bytes else None


class InstancesRequest(BaseModel):
    instances: list[Instance] = Field(min_length=1, max_length=256)


class InstancesResponse(BaseModel):
    """KServe v1 / TF-Serving: one prediction per instance, in order."""

    predictions: list[Prediction]


class FeedbackRequest(BaseModel):
    model: str | None = Field(default=None, description="Model the prediction came from; default model if omitted.")
    image: str = Field(description="The image, base64 (a data: URL prefix is accepted).")
    version: str | None = Field(default=None, description="Version that answered; the serving one if omitted.")
    detections: list[Detection] | None = Field(default=None, max_length=1000,
                                               description="The prediction being flagged; re-run if omitted.")
    note: str = Field(default="", max_length=2000, description="What was wrong.")


class FeedbackResponse(BaseModel):
    accepted: bool
    id: str
    model: str
    version: str

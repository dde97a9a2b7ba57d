"""Everything ``visionloop serve`` can be told, as one typed object handed to ``create_app``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from ..datasets.images import MAX_PIXELS
from .capture import CapturePolicy
from .ratelimit import parse_rate


class ServeConfig(BaseModel):
    models: list[str] = Field(description="--model values; the first is the default model.")
    watch: float = Field(default=0, description="Seconds between alias polls (0: off).")
    capture: CapturePolicy = Field(default_factory=CapturePolicy)
    store_url: str | None = Field(default=None, description="Capture inbox and prediction log store; default from settings.")
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    workers: int = Field(default=2, description="Inference threads (requests run concurrently).")
    queue: int = Field(default=64, description="Queued + running inference jobs before 503.")
    intra_threads: int | None = Field(default=None, description="onnxruntime intra-op threads per session "
                                      "(None: the available CPUs shared by the workers, or all with batching).")
    max_batch: int = Field(default=1, ge=1, description="Micro-batching: most requests per session run (1: off).")
    max_wait_ms: float = Field(default=2.0, ge=0, description="Micro-batching: how long a batch waits to fill.")
    batch_policy: Literal["adaptive", "always"] = Field(
        default="adaptive", description="Micro-batching: only for a model whose batches measure cheaper per "
        "image at load (adaptive), or always.")
    spinning: bool | None = Field(default=None, description="onnxruntime thread spinning; default: on with one worker "
                                    "and no batching.")
    provider: str = Field(default="auto", description="Execution provider: auto | cpu | cuda | tensorrt | openvino.")
    prediction_log: bool = Field(default=True, description="Write a compact record of every prediction to the store.")
    feedback_token: SecretStr | None = Field(default=None, description="Bearer token /v1/feedback needs (None: open).")
    feedback_rate: str = Field(default="60/min", description="Feedback requests per client IP: N/s, N/min, N/h, 0 = off.")
    feedback_max_body_bytes: int = Field(default=10 * 1024 * 1024, description="Largest /v1/feedback body.")

    @field_validator("feedback_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)  # a ValueError here is pydantic's validation error
        return value

"""Everything ``visionloop serve`` can be told, as one typed object handed to ``create_app``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..datasets.images import MAX_PIXELS
from .capture import CapturePolicy


class ServeConfig(BaseModel):
    models: list[str] = Field(description="--model values; the first is the default model.")
    watch: float = Field(default=0, description="Seconds between alias polls (0: off).")
    capture: CapturePolicy = Field(default_factory=CapturePolicy)
    store_url: str | None = Field(default=None, description="Capture inbox store; default from settings.")
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    workers: int = Field(default=2, description="Inference threads (requests run concurrently).")
    queue: int = Field(default=64, description="Queued + running inference jobs before 503.")
    intra_threads: int | None = Field(default=None, description="onnxruntime intra-op threads per session.")
    spinning: bool | None = Field(default=None, description="onnxruntime thread spinning; default: on with one worker.")

"""The capture inbox: images the server saw that are worth labeling, with its predictions.

Layout in the store::

    blobs/ab/ab12...                      image bytes (content-addressed, shared with datasets)
    inbox/MODEL/ID.json                   one CaptureRecord per captured image (written last)

Written by the server (off the request path) and by ``POST /v1/feedback``; read by
``visionloop data inbox``, ``label push`` and the loop. A record may carry ground-truth
``labels`` once someone labeled it (the demo's stand-in annotator, or a Label Studio pull).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from ..datasets.manifest import YoloBox
from ..predictions import Detection
from ..store import Store

Reason = Literal["low-confidence", "no-detection", "flagged", "sample", "all"]


class CaptureRecord(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    model: str
    version: str
    reason: Reason
    image_sha256: str
    ext: str
    width: int
    height: int
    classes: list[str] = Field(default_factory=list, description="The model's class names.")
    detections: list[Detection] = Field(default_factory=list, description="What the model said (records written"
                                        " before the box was nested, with flat x1..y2, still load).")
    note: str = ""
    labels: list[YoloBox] | None = Field(default=None, description="Ground truth once labeled.")


def _key(model: str, rec_id: str) -> str:
    return f"inbox/{model}/{rec_id}.json"


def write_capture(store: Store, record: CaptureRecord, image: bytes) -> CaptureRecord:
    """Blob first, record last: a crash never leaves a record without its image."""
    store.put_blob(image, record.image_sha256)
    store.write_bytes(_key(record.model, record.id), record.model_dump_json().encode())
    return record


def update_capture(store: Store, record: CaptureRecord) -> None:
    store.write_bytes(_key(record.model, record.id), record.model_dump_json().encode())


def list_captures(store: Store, model: str | None = None) -> list[CaptureRecord]:
    models = [model] if model else store.list("inbox")
    out: list[CaptureRecord] = []
    for m in models:
        for fname in store.list(f"inbox/{m}"):
            if fname.endswith(".json"):
                out.append(CaptureRecord.model_validate_json(store.read_bytes(f"inbox/{m}/{fname}")))
    return sorted(out, key=lambda r: r.created_at)


def count_captures(store: Store, model: str) -> int:
    return sum(1 for f in store.list(f"inbox/{model}") if f.endswith(".json"))

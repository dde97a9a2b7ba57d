"""The immutable dataset-version manifest and its typed parts.

A manifest is the whole truth about a dataset version: classes, preprocessing, split policy
and, per image, its content hash, size, split and boxes. Images live in the store as blobs;
the manifest only names them. Manifests are never edited: a change is a new version whose
``parent`` is the old one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from ..errors import ValidationError
from ..predictions import Task
from .split import DEFAULT_RATIOS, Split

TASK_WORDS: dict[str, str] = {"detect": "detection", "classify": "classification"}  # for messages
_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)(?:@(?P<version>latest|\d+))?$")


class YoloBox(BaseModel):
    """One object: class id and a YOLO box (center x/y, width, height; normalized 0..1)."""

    class_id: int
    cx: float
    cy: float
    w: float
    h: float

    def to_yolo_line(self) -> str:
        return f"{self.class_id} {self.cx:.6f} {self.cy:.6f} {self.w:.6f} {self.h:.6f}"

    def to_xyxy(self, width: int, height: int) -> tuple[float, float, float, float]:
        return (
            (self.cx - self.w / 2) * width,
            (self.cy - self.h / 2) * height,
            (self.cx + self.w / 2) * width,
            (self.cy + self.h / 2) * height,
        )


class ImageRecord(BaseModel):
    sha256: str
    ext: str = Field(description="File extension without dot, e.g. 'jpg'.")
    width: int
    height: int
    split: Split
    boxes: list[YoloBox] = Field(default_factory=list)
    class_id: int | None = Field(default=None, description="Classification label.")
    source: str = Field(default="", description="Original file name, for humans.")


class Preprocessing(BaseModel):
    max_width: int | None = None


class SplitPolicy(BaseModel):
    mode: Literal["hash", "source"] = "hash"
    seed: int = 0
    ratios: tuple[float, float, float] = DEFAULT_RATIOS


class DatasetManifest(BaseModel):
    name: str
    version: int
    parent: int | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    task: Task = "detect"
    classes: list[str]
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    split_policy: SplitPolicy = Field(default_factory=SplitPolicy)
    source: str = ""
    images: list[ImageRecord]
    content_hash: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def compute_content_hash(self) -> str:
        """Hash of what defines the data (not the version number, date or source)."""
        payload = {
            "task": self.task,
            "classes": self.classes,
            "preprocessing": self.preprocessing.model_dump(),
            "images": sorted(
                (i.model_dump(exclude={"source"}) for i in self.images), key=lambda d: d["sha256"]
            ),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def by_split(self, split: Split) -> list[ImageRecord]:
        return [i for i in self.images if i.split == split]

    def split_counts(self) -> dict[str, int]:
        c = Counter(i.split for i in self.images)
        return {s: c.get(s, 0) for s in ("train", "val", "test")}

    def box_counts(self) -> dict[str, dict[str, int]]:
        """Boxes per split and class name."""
        out: dict[str, dict[str, int]] = {}
        for img in self.images:
            row = out.setdefault(img.split, {})
            for b in img.boxes:
                name = self.classes[b.class_id]
                row[name] = row.get(name, 0) + 1
        return out


class DatasetRef(BaseModel):
    name: str
    version: int | None = None  # None = latest

    @classmethod
    def parse(cls, text: str) -> DatasetRef:
        m = _REF.match(text.strip())
        if not m:
            raise ValidationError(f"bad dataset reference {text!r}: expected NAME, NAME@VERSION or NAME@latest")
        v = m.group("version")
        return cls(name=m.group("name"), version=None if v in (None, "latest") else int(v))

    def __str__(self) -> str:
        return f"{self.name}@{'latest' if self.version is None else self.version}"

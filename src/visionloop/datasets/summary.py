"""Counts that describe datasets and versions: what ``data list`` and ``data show`` print
(as tables, or as JSON with ``--json``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..predictions import Task
from .catalog import Catalog
from .manifest import DatasetManifest, Preprocessing, SplitPolicy
from .split import SPLITS


class SplitStats(BaseModel):
    images: int
    background: int = Field(description="Images without any box.")
    boxes: dict[str, int] = Field(description="Boxes per class name (every class, zeros included).")
    per_class: dict[str, int] = Field(default_factory=dict,
                                      description="Classify: images per class name (every class, zeros included).")

    @property
    def box_total(self) -> int:
        return sum(self.boxes.values())


class VersionStats(BaseModel):
    ref: str
    name: str
    version: int
    parent: int | None
    created_at: str
    source: str
    task: Task
    classes: list[str]
    preprocessing: Preprocessing
    split_policy: SplitPolicy
    content_hash: str
    splits: dict[str, SplitStats] = Field(description="train, val and test.")
    total: SplitStats


class DatasetSummary(BaseModel):
    name: str
    versions: list[int]
    latest: str
    images: int
    splits: dict[str, int] = Field(description="Images per split of the latest version.")
    classes: list[str]


def version_stats(m: DatasetManifest) -> VersionStats:
    per_split = {}
    for s in SPLITS:
        imgs = m.by_split(s)
        boxes = dict.fromkeys(m.classes, 0)
        per_class = dict.fromkeys(m.classes, 0)
        for img in imgs:
            for b in img.boxes:
                boxes[m.classes[b.class_id]] += 1
            if img.class_id is not None:
                per_class[m.classes[img.class_id]] += 1
        background = 0 if m.task == "classify" else sum(1 for i in imgs if not i.boxes)
        per_split[s] = SplitStats(images=len(imgs), background=background, boxes=boxes,
                                  per_class=per_class if m.task == "classify" else {})
    total = SplitStats(images=len(m.images), background=sum(st.background for st in per_split.values()),
                       boxes={c: sum(st.boxes[c] for st in per_split.values()) for c in m.classes},
                       per_class={c: sum(st.per_class[c] for st in per_split.values()) for c in m.classes}
                       if m.task == "classify" else {})
    return VersionStats(ref=m.ref, name=m.name, version=m.version, parent=m.parent, created_at=m.created_at,
                        source=m.source, task=m.task, classes=m.classes, preprocessing=m.preprocessing,
                        split_policy=m.split_policy, content_hash=m.content_hash, splits=per_split, total=total)


def summaries(catalog: Catalog) -> list[DatasetSummary]:
    """One line per dataset, described by its latest version."""
    out = []
    for name in catalog.names():
        m = catalog.latest(name)
        if m is None:  # deleted between the listing and the read
            continue
        out.append(DatasetSummary(name=name, versions=catalog.versions(name), latest=m.ref, images=len(m.images),
                                  splits=m.split_counts(), classes=m.classes))
    return out

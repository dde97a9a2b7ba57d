"""What changed between two dataset versions: images, labels, splits and classes."""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field

from ..predictions import Task
from .manifest import DatasetManifest, ImageRecord
from .split import Split


class SplitChange(BaseModel):
    sha256: str
    old: Split
    new: Split


class ClassChange(BaseModel):
    """A classify image whose class changed (by name)."""

    sha256: str
    source: str
    old: str
    new: str


class ManifestDiff(BaseModel):
    old: str
    new: str
    task: Task = "detect"
    added: list[ImageRecord] = Field(default_factory=list)
    removed: list[ImageRecord] = Field(default_factory=list)
    relabeled: list[str] = Field(default_factory=list, description="sha256 of images whose boxes or class changed.")
    class_changes: list[ClassChange] = Field(default_factory=list, description="Classify: old and new class per image.")
    split_changed: list[SplitChange] = Field(default_factory=list)
    classes_added: list[str] = Field(default_factory=list)
    classes_removed: list[str] = Field(default_factory=list)
    classes_reordered: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.relabeled or self.split_changed
                    or self.classes_added or self.classes_removed or self.classes_reordered)


TOLERANCE = 1e-5  # exports round coordinates; a round trip is not a relabel


def _named_boxes(m: DatasetManifest, img: ImageRecord) -> list[tuple]:
    """Boxes with class NAMES: a reordered class list is not a relabel."""
    return sorted((m.classes[b.class_id], b.cx, b.cy, b.w, b.h) for b in img.boxes)


def _class_name(m: DatasetManifest, img: ImageRecord) -> str | None:
    """By NAME: a re-indexed class list is not a class change."""
    return m.classes[img.class_id] if img.class_id is not None else None


def same_boxes(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and all(abs(u - v) <= TOLERANCE for u, v in zip(x[1:], y[1:])) for x, y in zip(a, b))


def diff_manifests(a: DatasetManifest, b: DatasetManifest) -> ManifestDiff:
    old = {i.sha256: i for i in a.images}
    new = {i.sha256: i for i in b.images}
    d = ManifestDiff(old=a.ref, new=b.ref, task=b.task)
    d.added = [new[s] for s in new if s not in old]
    d.removed = [old[s] for s in old if s not in new]
    for s in old.keys() & new.keys():
        if not same_boxes(_named_boxes(a, old[s]), _named_boxes(b, new[s])):
            d.relabeled.append(s)
        was, now = _class_name(a, old[s]), _class_name(b, new[s])
        if was != now:
            d.relabeled.append(s)
            d.class_changes.append(ClassChange(sha256=s, source=new[s].source, old=was or "-", new=now or "-"))
        if old[s].split != new[s].split:
            d.split_changed.append(SplitChange(sha256=s, old=old[s].split, new=new[s].split))
    d.relabeled.sort()
    d.class_changes.sort(key=lambda c: (c.source, c.sha256))
    d.split_changed.sort(key=lambda c: c.sha256)
    d.classes_added = [c for c in b.classes if c not in a.classes]
    d.classes_removed = [c for c in a.classes if c not in b.classes]
    common_a = [c for c in a.classes if c in b.classes]
    common_b = [c for c in b.classes if c in a.classes]
    d.classes_reordered = common_a != common_b
    return d

"""Labeled images (from Label Studio or the labeled capture inbox) → a new dataset version.

Classes are matched by NAME against the dataset's classes, never by index; an unknown name
stops everything before a byte is written. The new version's parent is the current one:
images already in it keep their split, new ones get the hash split of the dataset's policy.
Captures that went into the version move to ``in_dataset`` (archived) after the commit, so a
crash in between only leaves them to be committed again (an unchanged version) and settled then.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..datasets import images
from ..datasets.catalog import Catalog, CommitResult, DraftImage
from ..datasets.manifest import YoloBox, DatasetManifest
from ..errors import ValidationError
from ..store import Store
from .inbox import CaptureRecord, list_captures, set_state


@dataclass
class LabeledImage:
    """An image already in the store with boxes (detection) or one class (classification) whose
    class ids index ``class_names``."""

    sha256: str
    ext: str
    width: int
    height: int
    boxes: list[YoloBox]
    class_names: list[str]
    source: str = ""
    capture: CaptureRecord | None = None  # the inbox record it came from, settled after the commit
    class_id: int | None = None  # classification's label

    def names_used(self) -> set[str]:
        ids = {b.class_id for b in self.boxes} | ({self.class_id} if self.class_id is not None else set())
        return {self.class_names[i] for i in ids}


def check_names(items: list[LabeledImage], classes: list[str], what: str) -> None:
    """One clear error listing every class name the dataset does not know."""
    unknown: set[str] = set()
    for it in items:
        unknown |= {n for n in it.names_used() if n not in classes}
    if unknown:
        raise ValidationError(
            f"{what} uses class names the dataset does not have: {', '.join(sorted(unknown))} "
            f"(dataset classes: {', '.join(classes)}); nothing was written"
        )


def _to_draft(store: Store, item: LabeledImage, manifest: DatasetManifest) -> DraftImage:
    remap = {i: manifest.classes.index(n) for i, n in enumerate(item.class_names) if n in manifest.classes}
    boxes = [b.model_copy(update={"class_id": remap[b.class_id]}) for b in item.boxes]
    sha, ext, w, h = item.sha256, item.ext, item.width, item.height
    max_width = manifest.preprocessing.max_width
    if max_width and w > max_width:  # same preprocessing as the rest of the dataset
        p = images.prepare(store.get_blob(sha), max_width)
        sha, ext, w, h = store.put_blob(p.data), p.ext, p.width, p.height
    return DraftImage(sha, ext, w, h, boxes, remap.get(item.class_id) if item.class_id is not None else None,
                      item.source)


def commit_labeled(store: Store, manifest: DatasetManifest, items: list[LabeledImage], source: str) -> CommitResult:
    """Parent + ``items`` as the next version of ``manifest.name`` (nothing written on error)."""
    check_names(items, manifest.classes, source)
    kind = {"classify" if it.class_id is not None else "detect" for it in items}
    if kind - {manifest.task}:
        what = "class labels" if manifest.task == "detect" else "box labels"
        raise ValidationError(f"dataset {manifest.ref} is a {manifest.task} dataset; {source} has {what}; "
                              "nothing was written")
    drafts = [_to_draft(store, it, manifest) for it in items]
    catalog = Catalog(store)
    latest = catalog.latest(manifest.name)
    if latest is None or latest.version != manifest.version:
        raise ValidationError(
            f"labels must extend the latest version of {manifest.name} "
            f"(latest is {latest.version if latest else 'none'}, got {manifest.version})"
        )
    res = catalog.commit(
        manifest.name, list(manifest.classes), drafts, task=manifest.task,
        preprocessing=manifest.preprocessing, split_policy=manifest.split_policy,
        source=source, add_to_parent=True,
    )
    settle(store, items, res.manifest.ref)
    return res


def settle(store: Store, items: list[LabeledImage], ref: str) -> int:
    """Captures behind ``items`` → ``in_dataset`` of ``ref`` (the version holding them; an unchanged
    commit names the parent, which already has them). Those already in a dataset keep the version
    that took them first; a discarded one labeled anyway is in the dataset now."""
    moved = 0
    for it in items:
        if it.capture is not None and it.capture.state != "in_dataset":
            set_state(store, it.capture, "in_dataset", dataset=ref)
            moved += 1
    return moved


def labeled_captures(store: Store, model: str | None = None) -> list[CaptureRecord]:
    """Hot captures with ground truth (state ``labeled``, or older records given labels in place)."""
    return [r for r in list_captures(store, model) if r.labels is not None or r.label is not None]


def from_capture(record: CaptureRecord, default_classes: list[str]) -> LabeledImage:
    """Labels of a capture index the model's classes (``record.classes``) like its detections."""
    names = record.classes or default_classes
    bad = {b.class_id for b in record.labels or [] if not 0 <= b.class_id < len(names)}
    if record.label is not None and not 0 <= record.label < len(names):
        bad.add(record.label)
    if bad:
        raise ValidationError(f"capture {record.id} has labels with class ids outside its classes: {sorted(bad)}")
    return LabeledImage(record.image_sha256, record.ext, record.width, record.height, list(record.labels or []),
                        list(names), source=f"capture:{record.id}", capture=record, class_id=record.label)

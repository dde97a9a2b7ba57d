"""Dataset versions in the store: resolve refs, list, and commit new versions.

Layout in the store::

    blobs/ab/ab12...             image bytes by sha256 (written first)
    datasets/NAME/v000003.json   manifest of NAME@3 (written last, exclusively)

A version becomes visible only when its manifest exists, and a manifest is created with an
exclusive write, so two importers racing for the same number cannot overwrite each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NotFoundError, ValidationError
from ..store import Store
from .manifest import TASK_WORDS, YoloBox, DatasetManifest, DatasetRef, ImageRecord, Preprocessing, SplitPolicy, Task
from .split import Split, assign_split


@dataclass
class DraftImage:
    """An image whose bytes are already in the store, waiting for a version to name it."""

    sha256: str
    ext: str
    width: int
    height: int
    boxes: list[YoloBox] = field(default_factory=list)
    class_id: int | None = None
    source: str = ""
    split: Split | None = None  # the split its source declared, used when policy.mode == "source"


@dataclass
class CommitResult:
    manifest: DatasetManifest
    created: bool  # False: the content equals the latest version, nothing was written


def _key(name: str, version: int) -> str:
    return f"datasets/{name}/v{version:06d}.json"


class Catalog:
    def __init__(self, store: Store):
        self.store = store

    def names(self) -> list[str]:
        return [n for n in self.store.list("datasets") if self.versions(n)]

    def versions(self, name: str) -> list[int]:
        out = []
        for fname in self.store.list(f"datasets/{name}"):
            if fname.startswith("v") and fname.endswith(".json"):
                out.append(int(fname[1:-5]))
        return sorted(out)

    def latest(self, name: str) -> DatasetManifest | None:
        vs = self.versions(name)
        return self._read(name, vs[-1]) if vs else None

    def _read(self, name: str, version: int) -> DatasetManifest:
        return DatasetManifest.model_validate_json(self.store.read_bytes(_key(name, version)))

    def load(self, ref: str | DatasetRef) -> DatasetManifest:
        r = DatasetRef.parse(ref) if isinstance(ref, str) else ref
        vs = self.versions(r.name)
        if not vs:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"dataset {r.name!r} does not exist (known: {known})")
        v = vs[-1] if r.version is None else r.version
        if v not in vs:
            raise NotFoundError(f"dataset {r.name} has no version {v} (versions: {', '.join(map(str, vs))})")
        return self._read(r.name, v)

    def commit(
        self,
        name: str,
        classes: list[str],
        images: list[DraftImage],
        *,
        task: Task = "detect",
        preprocessing: Preprocessing | None = None,
        split_policy: SplitPolicy | None = None,
        source: str = "",
        add_to_parent: bool = False,
    ) -> CommitResult:
        """Make a new version of ``name`` from ``images`` (or parent + images with ``add_to_parent``).

        Images already in the parent keep their split; new ones get the policy's split. When
        the resulting content equals the latest version, nothing is written.
        """
        DatasetRef.parse(name)  # validates the name
        policy = split_policy or SplitPolicy()
        parent = self.latest(name)
        check_same_task(parent, task)
        if task == "classify":
            _check_classify(classes, images)
        parent_records = list(parent.images) if add_to_parent and parent is not None else []
        if add_to_parent and parent is not None:
            classes, images = _merge_classes(parent, classes, images)
        if task == "classify":
            # ultralytics indexes class folders in sorted order: keep ids equal to its ids
            classes, images, parent_records = _sorted_classes(classes, images, parent_records)
        keep = {i.sha256: i.split for i in parent.images} if parent else {}

        records: dict[str, ImageRecord] = {i.sha256: i for i in parent_records}
        for d in images:
            split = keep.get(d.sha256) or (d.split if policy.mode == "source" and d.split else None)
            split = split or assign_split(policy.seed, d.sha256, policy.ratios)
            records[d.sha256] = ImageRecord(
                sha256=d.sha256, ext=d.ext, width=d.width, height=d.height, split=split,
                boxes=d.boxes, class_id=d.class_id, source=d.source,
            )
        if not records:
            raise ValidationError("no valid images to import")
        for sha in records:
            if not self.store.has_blob(sha):
                raise ValidationError(f"image {sha[:12]} is not in the store")

        while True:
            version = (self.versions(name) or [0])[-1] + 1
            m = DatasetManifest(
                name=name, version=version, parent=parent.version if parent else None, task=task,
                classes=list(classes), preprocessing=preprocessing or Preprocessing(),
                split_policy=policy, source=source,
                images=sorted(records.values(), key=lambda r: (r.split, r.source, r.sha256)),
            )
            m.content_hash = m.compute_content_hash()
            if parent is not None and parent.content_hash == m.content_hash:
                return CommitResult(parent, created=False)
            if self.store.create_exclusive(_key(name, version), m.model_dump_json(indent=1).encode()):
                return CommitResult(m, created=True)
            parent = self.latest(name)  # lost a race: rebase on the new latest


def check_same_task(parent: DatasetManifest | None, task: Task) -> None:
    """One dataset, one task: its versions are comparable and train the same kind of model."""
    if parent is not None and parent.task != task:
        raise ValidationError(f"{parent.ref} is a {TASK_WORDS[parent.task]} dataset; "
                              f"import {TASK_WORDS[task]} data under another name")


def _check_classify(classes: list[str], images: list[DraftImage]) -> None:
    if len(set(classes)) != len(classes):
        raise ValidationError(f"class names must be unique, got {', '.join(classes)}")
    for d in images:
        if d.boxes or d.class_id is None or not 0 <= d.class_id < len(classes):
            raise ValidationError(f"{d.source or d.sha256[:12]}: a classification image needs exactly one "
                                  f"class id in 0..{len(classes) - 1} and no boxes")


def _sorted_classes(classes: list[str], images: list[DraftImage], records: list[ImageRecord]
                    ) -> tuple[list[str], list[DraftImage], list[ImageRecord]]:
    """Sort the class names and re-index every label (new drafts and kept parent records)."""
    ordered = sorted(classes)
    remap = {i: ordered.index(c) for i, c in enumerate(classes)}
    drafts = [DraftImage(d.sha256, d.ext, d.width, d.height, [], remap[d.class_id], d.source, d.split)
              for d in images]
    kept = [r.model_copy(update={"class_id": remap[r.class_id]}) for r in records]
    return ordered, drafts, kept


def _merge_classes(
    parent: DatasetManifest, classes: list[str], images: list[DraftImage]
) -> tuple[list[str], list[DraftImage]]:
    """Classes are matched by name, never by index: new names are appended (a classify commit
    then sorts them and re-indexes, see :func:`_sorted_classes`)."""
    merged = list(parent.classes)
    for c in classes:
        if c not in merged:
            merged.append(c)
    remap = {i: merged.index(c) for i, c in enumerate(classes)}
    out = []
    for d in images:
        boxes = [b.model_copy(update={"class_id": remap[b.class_id]}) for b in d.boxes]
        cid = remap[d.class_id] if d.class_id is not None else None
        out.append(DraftImage(d.sha256, d.ext, d.width, d.height, boxes, cid, d.source, d.split))
    return merged, out

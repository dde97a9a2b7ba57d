"""Write a dataset version out as an Ultralytics folder with ``data.yaml`` (cached per version).

Detection: ``images/{split}/`` + ``labels/{split}/``. Classification: ``{split}/{class}/``
(ultralytics' class-folder layout; every class has a folder in each non-empty split so the
folder index equals the class id) plus a ``data.yaml`` naming the classes. The folder is built
under a temporary name and renamed into place, so a cached folder is always complete. On a
local store images are hard-linked from the blob store (no copy).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import yaml

from ..store import Store
from .manifest import DatasetManifest, ImageRecord
from .split import SPLITS


def file_stem(sha: str) -> str:
    return sha[:20]


def materialize(store: Store, manifest: DatasetManifest, cache_dir: Path) -> Path:
    """Return the ``data.yaml`` of ``manifest`` under ``cache_dir``, writing it when missing."""
    root = cache_dir / "datasets" / manifest.name / f"v{manifest.version}-{manifest.content_hash[:12]}"
    data_yaml = root / "data.yaml"
    if data_yaml.exists():
        return data_yaml
    tmp = root.with_name(f"{root.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write = _write_classify if manifest.task == "classify" else _write_detect
        cfg = write(store, manifest, tmp)
        (tmp / "data.yaml").write_text(yaml.safe_dump({"path": str(root), **cfg}, sort_keys=False))
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, root)
        except OSError:  # someone else materialized it meanwhile
            if not data_yaml.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_yaml


def _place(store: Store, img: ImageRecord, dst: Path) -> None:
    src = store.blob_local_path(img.sha256)
    if src:
        try:
            os.link(src, dst)
            return
        except OSError:
            shutil.copyfile(src, dst)
            return
    dst.write_bytes(store.get_blob(img.sha256))


def _write_detect(store: Store, manifest: DatasetManifest, tmp: Path) -> dict:
    for img in manifest.images:
        stem = file_stem(img.sha256)
        img_dir = tmp / "images" / img.split
        lbl_dir = tmp / "labels" / img.split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        _place(store, img, img_dir / f"{stem}.{img.ext}")
        (lbl_dir / f"{stem}.txt").write_text("".join(b.to_yolo_line() + "\n" for b in img.boxes))
    counts = manifest.split_counts()
    # Ultralytics needs a val set; tiny datasets may have none, then validate on test/train.
    val = "val" if counts["val"] else ("test" if counts["test"] else "train")
    return {
        "train": "images/train",
        "val": f"images/{val}",
        "test": f"images/{'test' if counts['test'] else val}",
        "names": dict(enumerate(manifest.classes)),
    }


def _write_classify(store: Store, manifest: DatasetManifest, tmp: Path) -> dict:
    """``{split}/{class}/{sha[:20]}.{ext}``; empty class folders keep the sorted index aligned."""
    counts = manifest.split_counts()
    for split in SPLITS:
        if counts[split]:
            for c in manifest.classes:
                (tmp / split / c).mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    for img in manifest.images:
        if img.class_id is None:  # not possible for a committed classify version; be explicit
            raise ValueError(f"{manifest.ref}: image {img.sha256[:12]} has no class")
        _place(store, img, tmp / img.split / manifest.classes[img.class_id] / f"{file_stem(img.sha256)}.{img.ext}")
    return {"names": dict(enumerate(manifest.classes)), "task": "classify"}

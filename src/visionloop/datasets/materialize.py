"""Write a dataset version out as an Ultralytics folder with ``data.yaml`` (cached per version).

The folder is built under a temporary name and renamed into place, so a cached folder is
always complete. On a local store images are hard-linked from the blob store (no copy).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import yaml

from ..store import Store
from .manifest import DatasetManifest


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
        for img in manifest.images:
            stem = file_stem(img.sha256)
            img_dir = tmp / "images" / img.split
            lbl_dir = tmp / "labels" / img.split
            img_dir.mkdir(parents=True, exist_ok=True)
            lbl_dir.mkdir(parents=True, exist_ok=True)
            dst = img_dir / f"{stem}.{img.ext}"
            src = store.blob_local_path(img.sha256)
            if src:
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            else:
                dst.write_bytes(store.get_blob(img.sha256))
            (lbl_dir / f"{stem}.txt").write_text("".join(b.to_yolo_line() + "\n" for b in img.boxes))
        counts = manifest.split_counts()
        # Ultralytics needs a val set; tiny datasets may have none, then validate on test/train.
        val = "val" if counts["val"] else ("test" if counts["test"] else "train")
        cfg = {
            "path": str(root),
            "train": "images/train",
            "val": f"images/{val}",
            "test": f"images/{'test' if counts['test'] else val}",
            "names": dict(enumerate(manifest.classes)),
        }
        (tmp / "data.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, root)
        except OSError:  # someone else materialized it meanwhile
            if not data_yaml.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_yaml

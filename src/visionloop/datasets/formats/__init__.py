"""Importers and exporters, picked from what the input looks like.

``open_source(path_or_url)`` recognises a YOLO-layout ``.zip`` (local or ``s3://``), an
Ultralytics ``data.yaml``, a COCO instances JSON, a Label Studio JSON export, and folders holding
one of those. Every importer returns a :class:`~visionloop.datasets.ingest.SourceDataset`; the
shared :func:`~visionloop.datasets.ingest.ingest` does the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from ...errors import NotFoundError, ValidationError
from ...store import Store
from ..ingest import SourceDataset, SourceItem
from ..manifest import DatasetManifest

ExportFormat = Literal["yolo", "coco", "labelstudio"]
EXPORT_FORMATS: tuple[str, ...] = ("yolo", "coco", "labelstudio")


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _load_json(path: Path, images_dir: Path | None) -> SourceDataset:
    from . import coco, labelstudio

    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError as exc:
        raise ValidationError(f"{path}: not valid JSON ({exc})") from None
    if coco.is_coco(doc):
        return coco.load(path, images_dir, doc)
    if labelstudio.is_labelstudio(doc):
        return labelstudio.load(path, images_dir, doc)
    raise ValidationError(f"{path}: neither a COCO file ('images' + 'annotations') "
                          f"nor a Label Studio export (a list of tasks)")


def _load_folder(path: Path, images_dir: Path | None) -> SourceDataset:
    from . import ultralytics_yaml, yolo_folder

    for name in ("data.yaml", "data.yml"):
        if (path / name).is_file():
            return ultralytics_yaml.load(path / name)
    if (path / "images").is_dir() and ((path / "classes.txt").is_file() or (path / "notes.json").is_file()):
        return yolo_folder.load_folder(path)
    jsons = sorted(p for p in path.glob("*.json") if p.name != "notes.json")
    if len(jsons) == 1:
        return _load_json(jsons[0], images_dir)
    raise ValidationError(
        f"{path}: cannot tell the format: expected data.yaml, classes.txt + images/ + labels/, "
        f"or a single COCO / Label Studio .json")


def open_source(src: str, images_dir: Path | None = None) -> SourceDataset:
    """Recognise the input and return its items (nothing is read beyond what recognition needs)."""
    from . import ultralytics_yaml, yolo_zip

    if images_dir is not None and not Path(images_dir).is_dir():
        raise NotFoundError(f"--images folder not found: {images_dir}")
    lower = src.lower()
    if lower.endswith(".zip"):
        return yolo_zip.load(src)
    if _is_url(src):
        raise ValidationError(f"cannot import {src}: from a URL only a YOLO-layout .zip is supported")
    path = Path(src.removeprefix("file://"))
    if not path.exists():
        raise NotFoundError(f"not found: {path}")
    if path.is_dir():
        return _load_folder(path, images_dir)
    if lower.endswith((".yaml", ".yml")):
        return ultralytics_yaml.load(path)
    if lower.endswith(".json"):
        return _load_json(path, images_dir)
    raise ValidationError(f"{path}: unsupported input; give a .zip, a data.yaml, a COCO or Label Studio .json, or a folder")


def synthetic_source(n: int, seed: int, size: int) -> SourceDataset:
    """Generated shapes with exact boxes, streamed (rendered one by one as the import asks)."""
    from .. import synthetic
    from ..validate import RawBox

    def items():
        for s in synthetic.generate(n, seed=seed, size=size):
            raw = [RawBox(b.class_id, b.cx, b.cy, b.w, b.h) for b in s.boxes]
            yield SourceItem(name=s.name, load=lambda d=s.data: d, labels=lambda r=raw: r)

    return SourceDataset(list(synthetic.CLASSES), items(), f"synthetic:n={n},seed={seed},size={size}", total=n)


def export_version(store: Store, manifest: DatasetManifest, fmt: str, out: Path) -> Path:
    from . import coco, labelstudio, yolo_folder

    exporters = {"yolo": yolo_folder.export, "coco": coco.export, "labelstudio": labelstudio.export}
    if fmt not in exporters:
        raise ValidationError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    return exporters[fmt](store, manifest, Path(out))

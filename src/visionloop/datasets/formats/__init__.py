"""Importers and exporters, picked from what the input looks like.

``open_source(path_or_url)`` recognises a YOLO-layout ``.zip`` (local or ``s3://``), an
Ultralytics ``data.yaml``, a COCO instances JSON, a Label Studio JSON export (rectangles or
choices), a classification CSV (``path,label``), class folders (``train/<class>/…`` or
``<class>/…``), and folders holding one of those. Every importer returns a :class:`~visionloop.datasets.ingest.SourceDataset`; the
shared :func:`~visionloop.datasets.ingest.ingest` does the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from ...errors import NotFoundError, ValidationError
from ...store import Store
from ..ingest import SourceDataset, SourceItem
from ...predictions import Task
from ..manifest import TASK_WORDS, DatasetManifest

ExportFormat = Literal["yolo", "coco", "labelstudio", "folders"]
EXPORT_FORMATS: tuple[str, ...] = ("yolo", "coco", "labelstudio", "folders")
TASK_EXPORT_FORMATS: dict[str, tuple[str, ...]] = {"detect": ("yolo", "coco", "labelstudio"),
                                                    "classify": ("folders", "labelstudio")}


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
    from . import classify, ultralytics_yaml, yolo_folder

    for name in ("data.yaml", "data.yml"):
        if (path / name).is_file():
            return ultralytics_yaml.load(path / name)
    if (path / "images").is_dir() and ((path / "classes.txt").is_file() or (path / "notes.json").is_file()):
        return yolo_folder.load_folder(path)
    jsons = sorted(p for p in path.glob("*.json") if p.name != "notes.json")
    if len(jsons) == 1:
        return _load_json(jsons[0], images_dir)
    csvs = sorted(path.glob("*.csv"))
    if len(csvs) == 1:
        return classify.load_csv(csvs[0])
    if classify.looks_like_split_folders(path):
        return classify.load_split_folders(path)
    if classify.looks_like_class_folders(path):
        return classify.load_class_folders(path)
    raise ValidationError(
        f"{path}: cannot tell the format: expected data.yaml, classes.txt + images/ + labels/, "
        f"a single COCO / Label Studio .json, a single path,label .csv, or class folders "
        f"(train/<class>/ or <class>/)")


def open_source(src: str, images_dir: Path | None = None, classes: list[str] | None = None) -> SourceDataset:
    """Recognise the input and return its items (nothing is read beyond what recognition needs).

    ``classes`` (classification only) fixes the class list: other labels are unknown classes."""
    source = _open(src, images_dir)
    if classes:
        if source.task != "classify":
            raise ValidationError("--classes applies to classification sources only "
                                  "(class folders, a path,label CSV, Label Studio choices)")
        source.classes = sorted(set(classes))
    return source


def _open(src: str, images_dir: Path | None) -> SourceDataset:
    from . import classify, ultralytics_yaml, yolo_zip

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
    if lower.endswith(".csv"):
        return classify.load_csv(path)
    raise ValidationError(f"{path}: unsupported input; give a .zip, a data.yaml, a COCO or Label Studio .json, or a folder")


def synthetic_source(n: int, seed: int, size: int, task: Task = "detect") -> SourceDataset:
    """Generated shapes with exact boxes (or one class per image), streamed as the import asks."""
    from .. import synthetic
    from ..validate import RawBox

    def items():
        for s in synthetic.generate(n, seed=seed, size=size, task=task):
            raw = [RawBox(b.class_id, b.cx, b.cy, b.w, b.h) for b in s.boxes]
            cls = synthetic.CLASSES[s.class_id] if s.class_id is not None else None
            yield SourceItem(name=s.name, load=lambda d=s.data: d, labels=lambda r=raw: r, class_name=cls)

    desc = f"synthetic:n={n},seed={seed},size={size}" + (",task=classify" if task == "classify" else "")
    return SourceDataset(list(synthetic.CLASSES), items(), desc, total=n, task=task)


def default_export_format(manifest: DatasetManifest) -> str:
    return "folders" if manifest.task == "classify" else "yolo"


def export_version(store: Store, manifest: DatasetManifest, fmt: str, out: Path) -> Path:
    from . import classify, coco, labelstudio, yolo_folder

    exporters = {"yolo": yolo_folder.export, "coco": coco.export, "labelstudio": labelstudio.export,
                 "folders": classify.export}
    fits = TASK_EXPORT_FORMATS[manifest.task]
    if fmt not in exporters:
        raise ValidationError(f"unknown export format {fmt!r}; choose one of {', '.join(fits)}")
    if fmt not in fits:
        what = "holds boxes" if manifest.task == "classify" else "holds classification data"
        raise ValidationError(f"{manifest.ref} is a {TASK_WORDS[manifest.task]} dataset; export it with "
                              f"--format {' or '.join(fits)} ({fmt} {what})")
    return exporters[fmt](store, manifest, Path(out))

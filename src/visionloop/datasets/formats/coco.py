"""COCO instances JSON with its image folder, both ways.

Import: ``bbox`` ``[x, y, w, h]`` in pixels becomes a normalized YOLO box; categories map to
class ids ``0..n-1`` by sorted category id, names kept; ``iscrowd`` regions are skipped as
Ultralytics' own converter does. Images are looked up beside the JSON, in ``images/`` beside it,
or in ``--images DIR``. Export writes ``annotations.json`` + ``images/`` (categories from 1).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path, PurePosixPath

from ...errors import ValidationError
from ...store import Store
from ..ingest import SourceDataset, SourceItem
from ..manifest import DatasetManifest
from ..validate import LabelError, Problem, ProblemKind, RawBox
from .tree import OutputTree, read_json_file
from .yolo_folder import export_stems


def is_coco(doc: object) -> bool:
    return isinstance(doc, dict) and "images" in doc and "annotations" in doc


def find_image(file_name: str, json_dir: Path, images_dir: Path | None) -> Path | None:
    """The first existing candidate: as written, its base name, under ``images/``, or in ``images_dir``."""
    base = PurePosixPath(file_name.replace("\\", "/")).name
    dirs = [d for d in (images_dir, json_dir, json_dir / "images") if d is not None]
    for d in dirs:
        for cand in (d / file_name, d / base):
            if cand.is_file():
                return cand
    p = Path(file_name)
    return p if p.is_absolute() and p.is_file() else None


def _missing(path: str) -> bytes:
    raise OSError(2, f"image file {path} not found", path)


def _boxes(anns: list[RawBox], error: LabelError | None) -> list[RawBox]:
    if error:
        raise error
    return anns


def load(json_path: Path, images_dir: Path | None = None, doc: dict | None = None) -> SourceDataset:
    json_path = Path(json_path)
    if doc is None:
        doc = read_json_file(json_path)
    if not is_coco(doc):
        raise ValidationError(f"{json_path}: not a COCO file (needs 'images' and 'annotations')")
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in doc.get("categories", []))
        imgs = [(int(i["id"]), str(i["file_name"])) for i in doc["images"]]
    except (KeyError, TypeError, ValueError):
        raise ValidationError(f"{json_path}: every category needs id+name, every image id+file_name") from None
    if not cats:
        raise ValidationError(f"{json_path}: no categories")
    cat_index = {cid: i for i, (cid, _) in enumerate(cats)}
    names = {iid: fname for iid, fname in imgs}

    boxes: dict[int, list[RawBox]] = {}
    errors: dict[int, LabelError] = {}
    problems: list[Problem] = []
    for n, ann in enumerate(doc["annotations"]):
        where = f"annotation {ann.get('id', n) if isinstance(ann, dict) else n}"
        iid = ann.get("image_id") if isinstance(ann, dict) else None
        if iid not in names:
            problems.append(Problem(ProblemKind.LABEL_WITHOUT_IMAGE, f"{json_path.name}: {where}",
                                    f"refers to image id {iid!r}, which is not in 'images'"))
            continue
        if ann.get("iscrowd"):
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            errors.setdefault(iid, LabelError(ProblemKind.BAD_LABEL_LINE, f"{where}: bbox must be 4 numbers [x, y, w, h]"))
            continue
        cid = ann.get("category_id")
        cls = cat_index.get(cid, -1) if isinstance(cid, int) else -1
        if cls < 0:
            errors.setdefault(iid, LabelError(ProblemKind.CLASS_OUT_OF_RANGE, f"{where}: unknown category_id {cid!r}"))
            continue
        boxes.setdefault(iid, []).append(RawBox(cls, *map(float, bbox), form="xywh_px", where=where))

    items = []
    for iid, fname in imgs:
        path = find_image(fname, json_path.parent, images_dir)
        load_fn = partial(path.read_bytes) if path else partial(_missing, fname)
        items.append(SourceItem(
            name=fname, load=load_fn, label_name=f"{json_path.name}: image {iid} ({fname})",
            labels=partial(_boxes, boxes.get(iid, []), errors.get(iid)),
        ))
    return SourceDataset([name for _, name in cats], items, str(json_path), total=len(items), problems=problems)


def export(store: Store, manifest: DatasetManifest, out: Path) -> Path:
    images, annotations = [], []
    with OutputTree(out) as tree:
        for n, (stem, img) in enumerate(zip(export_stems(manifest), manifest.images), start=1):
            fname = f"{stem}.{img.ext}"
            tree.write_blob(f"images/{fname}", store, img.sha256)
            images.append({"id": n, "file_name": fname, "width": img.width, "height": img.height})
            for b in img.boxes:
                x1, y1, x2, y2 = b.to_xyxy(img.width, img.height)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": n, "category_id": b.class_id + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                })
        doc = {
            "info": {"description": manifest.ref, "version": str(manifest.version)},
            "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": c, "supercategory": "none"} for i, c in enumerate(manifest.classes)],
        }
        tree.write("annotations.json", json.dumps(doc, indent=1))
    return out

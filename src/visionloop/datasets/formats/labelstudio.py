"""Label Studio JSON export (a list of tasks), both ways.

Import: each task's ``data.image`` is found as a local path, relative to the JSON's folder, in
``--images DIR`` (also without the ``1a2b3c4d-`` prefix Label Studio gives uploads), or read
from a store URL (``s3://``). The last non-cancelled annotation counts; its
``rectanglelabels`` (percent of the image, optionally rotated) become YOLO boxes. Classes are
matched by NAME and sorted, so the same names give the same ids. A task without any annotation
is not labeled yet and is skipped (an annotation with no boxes is a background image).

A classification export (``choices`` results and no rectangles) becomes a classify source:
the one chosen name is the image's class; an annotation without a choice is not labeled yet.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse

from ...errors import ValidationError
from ...store import Store, read_url
from ..ingest import SourceDataset, SourceItem
from ..manifest import DatasetManifest
from ..validate import LabelError, Problem, ProblemKind, RawBox
from .tree import OutputTree, read_json_file
from .yolo_folder import export_stems

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def is_labelstudio(doc: object) -> bool:
    return isinstance(doc, list) and all(isinstance(t, dict) and "data" in t for t in doc)


def _candidates(ref: str, json_dir: Path, images_dir: Path | None) -> list[Path]:
    parsed = urlparse(ref)
    rel = parse_qs(parsed.query).get("d", [None])[0]  # /data/local-files/?d=dir/img.jpg
    path = unquote(rel or parsed.path)
    base = PurePosixPath(path).name
    names = [base, _UPLOAD_PREFIX.sub("", base)]
    out = [Path(path)] if Path(path).is_absolute() else [json_dir / path]
    for d in (images_dir, json_dir, json_dir / "images"):
        if d is not None:
            out += [d / path.lstrip("/")] + [d / n for n in names]
    return out


def _loader(ref: str, json_dir: Path, images_dir: Path | None):
    if ref.startswith("s3://"):
        return partial(read_url, ref)
    for cand in _candidates(ref, json_dir, images_dir):
        if cand.is_file():
            return partial(cand.read_bytes)

    def missing() -> bytes:
        hint = "" if images_dir else " (pass --images DIR)"
        raise OSError(2, f"image {ref} not found{hint}", ref)
    return missing


def _result_boxes(result: list, task_id: object) -> tuple[list[tuple[str, dict, str]], LabelError | None]:
    out = []
    for k, r in enumerate(result):
        if not isinstance(r, dict) or r.get("type") != "rectanglelabels":
            continue  # choices, keypoints, ... are not boxes
        where = f"task {task_id} result {k}"
        v = r.get("value") or {}
        labels = v.get("rectanglelabels") or []
        if len(labels) != 1:
            return [], LabelError(ProblemKind.BAD_LABEL_LINE, f"{where}: expected one label, got {len(labels)}")
        if not all(isinstance(v.get(f), (int, float)) for f in ("x", "y", "width", "height")):
            return [], LabelError(ProblemKind.BAD_LABEL_LINE, f"{where}: x, y, width, height must be numbers")
        out.append((str(labels[0]), v, where))
    return out, None


def _boxes(found: list[tuple[str, dict, str]], classes: list[str], error: LabelError | None) -> list[RawBox]:
    if error:
        raise error
    index = {c: i for i, c in enumerate(classes)}
    return [RawBox(index[name], float(v["x"]), float(v["y"]), float(v["width"]), float(v["height"]),
                   form="xywh_pct", where=where, rotation=float(v.get("rotation") or 0))
            for name, v, where in found]


def _annotations(task: dict) -> list[dict]:
    return [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]


def _results(task: dict) -> list:
    """The last non-cancelled annotation's results ([] when there is none): the one that counts."""
    anns = _annotations(task)
    return (anns[-1].get("result") or []) if anns else []


def is_choices_export(doc: list) -> bool:
    """Choices results and no rectangles anywhere: a classification project."""
    types = {r.get("type") for t in doc for r in _results(t) if isinstance(r, dict)}
    return "choices" in types and "rectanglelabels" not in types


def _tasks(json_path: Path, doc: list, problems: list[Problem]):
    """(task id, image ref, results) of every labeled task; the others become problems."""
    for n, task in enumerate(doc):
        tid = task.get("id", n)
        ref = (task.get("data") or {}).get("image")
        if not isinstance(ref, str) or not ref:
            problems.append(Problem(ProblemKind.UNREADABLE_IMAGE, f"{json_path.name}: task {tid}",
                                    "task has no data.image"))
            continue
        if not _annotations(task):
            problems.append(Problem(ProblemKind.UNLABELED, ref, f"task {tid} has no annotation yet (skipped)"))
            continue
        yield tid, ref, _results(task)


def choice(result: list, task_id: object) -> str | None:
    """The one chosen class; None when nothing is chosen; LabelError for several."""
    chosen = [c for r in result if isinstance(r, dict) and r.get("type") == "choices"
              for c in (r.get("value") or {}).get("choices") or []]
    if len(chosen) > 1:
        raise LabelError(ProblemKind.BAD_LABEL_LINE,
                         f"task {task_id}: expected one choice, got {len(chosen)} ({', '.join(map(str, chosen))})")
    return str(chosen[0]) if chosen else None


def _declared_splits(doc: list) -> dict:
    """Task id → ``data.split`` (what our export records), when every task names a valid split."""
    splits = {t.get("id", n): (t.get("data") or {}).get("split") for n, t in enumerate(doc)}
    return splits if all(s in ("train", "val", "test") for s in splits.values()) else {}


def _load_choices(json_path: Path, images_dir: Path | None, doc: list) -> SourceDataset:
    problems: list[Problem] = []
    items: list[SourceItem] = []
    splits = _declared_splits(doc)
    for tid, ref, result in _tasks(json_path, doc, problems):
        where = f"{json_path.name}: task {tid}"
        try:
            name = choice(result, tid)
        except LabelError as exc:
            problems.append(Problem(exc.kind, where, str(exc).removeprefix(f"task {tid}: ")))
            continue
        if name is None:
            problems.append(Problem(ProblemKind.UNLABELED, ref, f"task {tid} has no choice yet (skipped)"))
            continue
        items.append(SourceItem(name=ref, load=_loader(ref, json_path.parent, images_dir),
                                label_name=where, class_name=name, split=splits.get(tid)))
    classes = sorted({i.class_name for i in items if i.class_name})
    return SourceDataset(classes, items, str(json_path), total=len(items), problems=problems, task="classify",
                         has_splits=bool(items) and all(i.split for i in items))


def load(json_path: Path, images_dir: Path | None = None, doc: list | None = None) -> SourceDataset:
    json_path = Path(json_path)
    if doc is None:
        doc = read_json_file(json_path)
    if not is_labelstudio(doc):
        raise ValidationError(f"{json_path}: not a Label Studio export (a list of tasks with 'data')")
    if is_choices_export(doc):
        return _load_choices(json_path, images_dir, doc)

    parsed = []
    problems: list[Problem] = []
    names: set[str] = set()
    for tid, ref, result in _tasks(json_path, doc, problems):
        found, err = _result_boxes(result, tid)
        names.update(name for name, _, _ in found)
        parsed.append((tid, ref, found, err))
    classes = sorted(names)
    items = [
        SourceItem(name=ref, load=_loader(ref, json_path.parent, images_dir),
                   labels=partial(_boxes, found, classes, err), label_name=f"{json_path.name}: task {tid}")
        for tid, ref, found, err in parsed
    ]
    return SourceDataset(classes, items, str(json_path), total=len(items), problems=problems)


def _choice_result(n: int, manifest: DatasetManifest, class_id: int) -> list[dict]:
    return [{"id": f"{n}-0", "type": "choices", "from_name": "choice", "to_name": "image",
             "value": {"choices": [manifest.classes[class_id]]}}]


def export(store: Store, manifest: DatasetManifest, out: Path) -> Path:
    """``tasks.json`` + ``images/``; ``data.image`` is relative to the JSON so it imports back.
    A classify version gives one ``choices`` result per task."""
    tasks = []
    with OutputTree(out) as tree:
        for n, (stem, img) in enumerate(zip(export_stems(manifest), manifest.images), start=1):
            fname = f"images/{stem}.{img.ext}"
            tree.write_blob(fname, store, img.sha256)
            if manifest.task == "classify":
                result = _choice_result(n, manifest, img.class_id)
                tasks.append({"id": n, "data": {"image": fname, "split": img.split, "sha256": img.sha256},
                              "annotations": [{"id": n, "result": result, "was_cancelled": False}]})
                continue
            result = [{
                "id": f"{n}-{k}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                "original_width": img.width, "original_height": img.height, "image_rotation": 0,
                "value": {"x": (b.cx - b.w / 2) * 100, "y": (b.cy - b.h / 2) * 100,
                          "width": b.w * 100, "height": b.h * 100, "rotation": 0,
                          "rectanglelabels": [manifest.classes[b.class_id]]},
            } for k, b in enumerate(img.boxes)]
            tasks.append({"id": n, "data": {"image": fname, "split": img.split, "sha256": img.sha256},
                          "annotations": [{"id": n, "result": result, "was_cancelled": False}]})
        tree.write("tasks.json", json.dumps(tasks, indent=1))
    return out

"""The flyingthings / Label Studio "YOLO" layout: ``classes.txt``, ``images/``, ``labels/``, ``notes.json``.

Read from a folder or (via :mod:`.yolo_zip`) an archive; also the layout ``export --format yolo``
writes. Labels pair with images by their path under ``images/`` (``images/a/b.jpg`` ↔
``labels/a/b.txt``). Class names come from ``classes.txt`` — every non-blank line, the last
one too when it lacks a newline — or, when it is missing, from ``notes.json`` ``categories``.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path, PurePosixPath

from ...errors import ValidationError
from ...store import Store
from ..ingest import SourceDataset, SourceItem
from ..manifest import DatasetManifest
from ..validate import LabelError, Problem, ProblemKind, RawBox, parse_yolo_text
from .tree import FileTree, OutputTree, folder_tree, is_image_name


def parse_classes_txt(text: str, where: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()  # a trailing newline (or several) is not a class
    for n, ln in enumerate(lines, start=1):
        if not ln:
            raise ValidationError(f"{where}: line {n} is empty; every line must name a class")
    return lines


def parse_notes_json(text: str, where: str) -> list[str]:
    try:
        cats = json.loads(text)["categories"]
        pairs = sorted((int(c["id"]), str(c["name"])) for c in cats)
    except (ValueError, KeyError, TypeError):
        raise ValidationError(f"{where}: expected {{'categories': [{{'id', 'name'}}, ...]}}") from None
    return [name for _, name in pairs]


def _layout_root(tree: FileTree) -> str:
    """The folder holding ``images/`` (exports are often wrapped in one top-level folder)."""
    roots = set()
    for path in tree.files:
        parts = PurePosixPath(path).parts
        if "images" in parts[:-1]:
            i = parts.index("images")
            roots.add("/".join(parts[:i]))
    if not roots:
        raise ValidationError(f"{tree.label}: no images/ folder found (expected classes.txt, images/, labels/)")
    root = min(roots, key=lambda r: (r.count("/") if r else -1, r))
    return f"{root}/" if root else ""


def _read_labels(tree: FileTree, path: str) -> list[RawBox]:
    try:
        text = tree.read_text(path)
    except ValidationError as exc:
        raise LabelError(ProblemKind.BAD_LABEL_LINE, str(exc).split(": ", 1)[-1]) from None
    return parse_yolo_text(text, path)


def source_from_tree(tree: FileTree) -> SourceDataset:
    root = _layout_root(tree)
    classes_key, notes_key = f"{root}classes.txt", f"{root}notes.json"
    if classes_key in tree.files:
        classes = parse_classes_txt(tree.read_text(classes_key), f"{tree.label}: {classes_key}")
    elif notes_key in tree.files:
        classes = parse_notes_json(tree.read_text(notes_key), f"{tree.label}: {notes_key}")
    else:
        raise ValidationError(f"{tree.label}: no class names (neither {classes_key} nor {notes_key} exists)")

    img_prefix, lbl_prefix = f"{root}images/", f"{root}labels/"
    items: list[SourceItem] = []
    stems: set[str] = set()
    for path in sorted(tree.files):
        if not (path.startswith(img_prefix) and is_image_name(path)):
            continue
        stem = str(PurePosixPath(path[len(img_prefix):]).with_suffix(""))
        stems.add(stem)
        label = f"{lbl_prefix}{stem}.txt"
        labels = partial(_read_labels, tree, label) if label in tree.files else (lambda: None)
        items.append(SourceItem(name=path, load=tree.files[path], labels=labels, label_name=label))
    problems = [
        Problem(ProblemKind.LABEL_WITHOUT_IMAGE, path, "label file has no matching image in images/")
        for path in sorted(tree.files)
        if path.startswith(lbl_prefix) and path.endswith(".txt")
        and path[len(lbl_prefix):-4] not in stems
    ]
    return SourceDataset(classes, items, tree.label, total=len(items), problems=problems)


def load_folder(path: Path) -> SourceDataset:
    return source_from_tree(folder_tree(path))


def export_stems(manifest: DatasetManifest) -> list[str]:
    """A file stem per image: its original name when unique and safe, else its hash prefix."""
    wanted = [PurePosixPath(i.source).stem for i in manifest.images]
    counts: dict[str, int] = {}
    for w in wanted:
        counts[w] = counts.get(w, 0) + 1
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    return [
        w if w and counts[w] == 1 and set(w) <= safe and not w.startswith(".") else i.sha256[:20]
        for w, i in zip(wanted, manifest.images)
    ]


def export(store: Store, manifest: DatasetManifest, out: Path) -> Path:
    """Write the flyingthings layout (folder or ``.zip``); splits are not part of this layout."""
    with OutputTree(out) as tree:
        tree.write("classes.txt", "".join(f"{c}\n" for c in manifest.classes))
        tree.write("notes.json", json.dumps({
            "categories": [{"id": i, "name": c} for i, c in enumerate(manifest.classes)],
            "info": {"dataset": manifest.ref, "exported_by": "visionloop"},
        }, indent=2))
        for stem, img in zip(export_stems(manifest), manifest.images):
            tree.write_blob(f"images/{stem}.{img.ext}", store, img.sha256)
            tree.write(f"labels/{stem}.txt", "".join(b.to_yolo_line() + "\n" for b in img.boxes))
    return out

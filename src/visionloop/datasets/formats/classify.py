"""Classification sources: class folders (ImageNet style, with or without splits) and a CSV.

* Split folders: ``train/<class>/*.jpg``, ``val/…`` (``valid``/``validation`` too), ``test/…``;
  splits are kept.
* One folder of class folders: ``<class>/*.jpg``; images get the hash split.
* A CSV of ``path,label`` (an optional header row), paths relative to the CSV's folder.

Classes are, in order of precedence: ``--classes``, a ``classes.txt`` at the source's root,
or the sorted names found. A label outside a given class list is an *unknown class*. A class
folder without images is reported (and, when classes come from the folders, is no class).
Export writes split class folders plus ``classes.txt``, which imports back unchanged.
"""

from __future__ import annotations

import csv
import io
from functools import partial
from pathlib import Path

from ...errors import ValidationError
from ...store import Store
from ..ingest import SourceDataset, SourceItem
from ..manifest import DatasetManifest
from ..split import Split
from ..validate import Problem, ProblemKind
from .tree import OutputTree, is_image_name
from .yolo_folder import export_stems, parse_classes_txt

SPLIT_DIRS: dict[str, Split] = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_HEADER_PATHS = {"path", "image", "file", "filename", "image_path", "filepath"}


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name)
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def _split_dirs(root: Path) -> list[tuple[Path, Split]]:
    return [(p, SPLIT_DIRS[p.name.lower()]) for p in _subdirs(root) if p.name.lower() in SPLIT_DIRS]


def looks_like_split_folders(root: Path) -> bool:
    """``train/<class>/…``: split folders holding class folders, not detection's ``images/`` + ``labels/``."""
    splits = _split_dirs(root)
    return bool(splits) and any(_subdirs(p) for p, _ in splits) and not any(
        (p / "labels").is_dir() for p, _ in splits)


def looks_like_class_folders(root: Path) -> bool:
    return any(_images_under(p) for p in _subdirs(root))


def _declared_classes(root: Path) -> list[str] | None:
    f = root / "classes.txt"
    return parse_classes_txt(f.read_text(encoding="utf-8-sig"), str(f)) if f.is_file() else None


def _from_folders(root: Path, groups: list[tuple[Path, Split | None]], has_splits: bool) -> SourceDataset:
    items: list[SourceItem] = []
    problems: list[Problem] = []
    found: set[str] = set()
    for group, split in groups:
        for stray in sorted(p for p in group.iterdir() if p.is_file() and is_image_name(p.name)):
            rel = stray.relative_to(root).as_posix()
            problems.append(Problem(ProblemKind.UNLABELED, rel, "image is not inside a class folder (skipped)"))
        for cdir in _subdirs(group):
            files = _images_under(cdir)
            if not files:
                problems.append(Problem(ProblemKind.EMPTY_CLASS_FOLDER, f"{cdir.relative_to(root).as_posix()}/",
                                        "class folder has no images"))
                continue
            found.add(cdir.name)
            for f in files:
                items.append(SourceItem(name=f.relative_to(root).as_posix(), load=partial(f.read_bytes),
                                        split=split, class_name=cdir.name))
    classes = _declared_classes(root) or sorted(found)
    return SourceDataset(classes, items, str(root), total=len(items), has_splits=has_splits,
                         problems=problems, task="classify")


def load_split_folders(root: Path) -> SourceDataset:
    splits = _split_dirs(root)
    seen: dict[Split, Path] = {}
    for p, s in splits:
        if s in seen:
            raise ValidationError(f"{root}: both {seen[s].name}/ and {p.name}/ are the {s} split; keep one")
        seen[s] = p
    return _from_folders(root, [(p, s) for p, s in splits], has_splits=True)


def load_class_folders(root: Path) -> SourceDataset:
    return _from_folders(root, [(root, None)], has_splits=False)


def _is_header(row: list[str]) -> bool:
    return len(row) >= 2 and row[0].strip().lower() in _HEADER_PATHS


def load_csv(path: Path) -> SourceDataset:
    """``path,label`` rows; a bad row is reported with its line number and skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{path}: not UTF-8 text") from None
    rows = list(csv.reader(io.StringIO(text)))
    items: list[SourceItem] = []
    problems: list[Problem] = []
    labels: set[str] = set()
    for n, row in enumerate(rows, start=1):
        if not any(c.strip() for c in row) or (n == 1 and _is_header(row)):
            continue
        where = f"{path.name}:{n}"
        if len(row) != 2:
            problems.append(Problem(ProblemKind.BAD_LABEL_LINE, where,
                                    f"expected 2 fields 'path,label', got {len(row)}"))
            continue
        rel, label = row[0].strip(), row[1].strip()
        if not rel or not label:
            problems.append(Problem(ProblemKind.BAD_LABEL_LINE, where, f"empty {'path' if not rel else 'label'}"))
            continue
        labels.add(label)
        file = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        items.append(SourceItem(name=rel, load=partial(file.read_bytes), label_name=where, class_name=label))
    if not items and not problems:
        raise ValidationError(f"{path}: no rows (expected 'path,label' lines)")
    classes = _declared_classes(path.parent) or sorted(labels)
    return SourceDataset(classes, items, str(path), total=len(items), problems=problems, task="classify")


def export(store: Store, manifest: DatasetManifest, out: Path) -> Path:
    """``classes.txt`` + ``{split}/{class}/{name}.{ext}``: the layout :func:`load_split_folders` reads."""
    if manifest.task != "classify":  # export_version refuses it first; direct callers too
        raise ValidationError(f"{manifest.ref} is a detection dataset; class folders hold classification data")
    with OutputTree(out) as tree:
        tree.write("classes.txt", "".join(f"{c}\n" for c in manifest.classes))
        for stem, img in zip(export_stems(manifest), manifest.images):
            tree.write_blob(f"{img.split}/{manifest.classes[img.class_id]}/{stem}.{img.ext}", store, img.sha256)
    return out


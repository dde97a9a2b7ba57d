"""An Ultralytics / Roboflow ``data.yaml``: train/val/test image folders (or list files) and names.

Paths resolve the way Ultralytics does: relative to ``path:`` (itself relative to the yaml's
folder here, since Ultralytics' global datasets dir means nothing to an importer) or to the
yaml's folder, with Roboflow's ``../train/images`` retried without the leading ``../``. Labels
sit where Ultralytics looks for them: the last ``/images/`` of the path becomes ``/labels/``.
The source's own splits are kept unless the import asks for ``--resplit``.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import yaml

from ...errors import NotFoundError, ValidationError
from ..ingest import SourceDataset, SourceItem
from ..split import Split
from ..validate import LabelError, Problem, ProblemKind, RawBox, parse_yolo_text
from .tree import is_image_name

_SPLIT_KEYS: dict[str, Split] = {"train": "train", "val": "val", "test": "test"}


def parse_names(cfg: dict, where: str) -> list[str]:
    names, nc = cfg.get("names"), cfg.get("nc")
    if names is None:
        if not isinstance(nc, int) or nc < 1:
            raise ValidationError(f"{where}: needs 'names' (a list or a dict) or 'nc'")
        return [f"class_{i}" for i in range(nc)]
    if isinstance(names, list):
        out = [str(n) for n in names]
    elif isinstance(names, dict):
        try:
            pairs = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise ValidationError(f"{where}: 'names' keys must be class ids 0..n-1") from None
        if sorted(pairs) != list(range(len(pairs))):
            raise ValidationError(f"{where}: 'names' keys must be class ids 0..{len(pairs) - 1}, got {sorted(pairs)}")
        out = [pairs[i] for i in range(len(pairs))]
    else:
        raise ValidationError(f"{where}: 'names' must be a list or a dict, not {type(names).__name__}")
    if not out:
        raise ValidationError(f"{where}: 'names' is empty")
    if nc is not None and nc != len(out):
        raise ValidationError(f"{where}: 'nc: {nc}' does not match the {len(out)} names")
    return out


def _resolve(base: Path, entry: str) -> Path:
    x = (base / entry).resolve()
    if not x.exists() and entry.startswith("../"):
        x = (base / entry[3:]).resolve()  # Roboflow's layout, as Ultralytics resolves it
    return x


def label_path(image: Path) -> Path:
    """Ultralytics' rule: replace the last ``/images/`` by ``/labels/`` and the suffix by ``.txt``."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        head, _, tail = s.rpartition(sa)
        s = head + sb + tail
    return Path(s).with_suffix(".txt")


def _walk_images(folder: Path) -> list[Path]:
    """Image files below ``folder``; scandir's cached entry types avoid a stat per file."""
    out, stack = [], [folder]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir():
                    stack.append(Path(e.path))
                elif e.is_file() and is_image_name(e.name):
                    out.append(Path(e.path))
    return sorted(out)


def _walk_labels(folder: Path) -> list[Path]:
    return sorted(Path(dp) / f for dp, _, fs in os.walk(folder) for f in fs if f.endswith(".txt"))


def _images_of(entry: Path, where: str) -> list[Path]:
    if entry.is_dir():
        return _walk_images(entry)
    if entry.is_file() and entry.suffix == ".txt":  # a list of image paths, relative to its folder
        lines = [ln.strip() for ln in entry.read_text().splitlines() if ln.strip()]
        return [(entry.parent / ln).resolve() for ln in lines]
    raise NotFoundError(f"{where}: image folder {entry} does not exist")


def _read_labels(path: Path, shown: str) -> list[RawBox] | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return None  # no label file: a background image
    except (UnicodeDecodeError, OSError) as exc:
        raise LabelError(ProblemKind.BAD_LABEL_LINE, f"cannot read label file: {exc}") from None
    return parse_yolo_text(text, shown)


def load(yaml_path: Path) -> SourceDataset:
    yaml_path = Path(yaml_path).resolve()
    if not yaml_path.is_file():
        raise NotFoundError(f"not found: {yaml_path}")
    try:
        cfg = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError as exc:
        raise ValidationError(f"{yaml_path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise ValidationError(f"{yaml_path}: expected a mapping with train/val/names")
    classes = parse_names(cfg, str(yaml_path))
    if not cfg.get("train"):
        raise ValidationError(f"{yaml_path}: no 'train' entry")
    base = yaml_path.parent
    if cfg.get("path"):
        base = _resolve(yaml_path.parent, str(cfg["path"]))
    prefix = f"{base}{os.sep}"  # names in messages and in the manifest are relative to it

    def shown(p: Path) -> str:
        s = str(p)  # plain string ops: pathlib costs more than the decode-free work per image
        return s[len(prefix):].replace(os.sep, "/") if s.startswith(prefix) else s

    items: list[SourceItem] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for key, split in _SPLIT_KEYS.items():
        entries = cfg.get(key) or []
        for entry in entries if isinstance(entries, list) else [entries]:
            folder = _resolve(base, str(entry))
            imgs = _images_of(folder, f"{yaml_path.name} '{key}'")
            label_files = set()
            for img in imgs:
                if img in seen:
                    continue
                seen.add(img)
                lbl = label_path(img)
                lbl_name = shown(lbl)
                label_files.add(lbl)
                items.append(SourceItem(
                    name=shown(img), load=partial(img.read_bytes), split=split,
                    labels=partial(_read_labels, lbl, lbl_name), label_name=lbl_name,
                ))
            lbl_dir = label_path(folder / "x.jpg").parent if folder.is_dir() else None
            if lbl_dir and lbl_dir.is_dir() and lbl_dir != folder:
                problems += [
                    Problem(ProblemKind.LABEL_WITHOUT_IMAGE, shown(p), "label file has no matching image")
                    for p in _walk_labels(lbl_dir) if p not in label_files
                ]
    return SourceDataset(classes, items, str(yaml_path), total=len(items), has_splits=True, problems=problems)

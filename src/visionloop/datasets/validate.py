"""Checks on imported items, with a typed report of what was found.

Every importer turns its labels into :class:`RawBox` objects (whatever their source units),
and :func:`normalize_boxes` converts them to YOLO boxes and applies the same checks for every
format. Problems are collected in a :class:`ValidationReport`: by default a bad item is
dropped with a warning; in strict mode the importer raises before writing anything.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from ..errors import ValidationError
from ..predictions import Task
from .manifest import YoloBox

EPS = 1e-6  # tolerance for float noise in exported coordinates (e.g. 1.0000001)


class ProblemKind(str, Enum):
    """What can be wrong with an item; the value is the label shown in the summary."""

    UNREADABLE_IMAGE = "unreadable or truncated image"
    DECOMPRESSION_BOMB = "decompression bomb"
    BAD_LABEL_LINE = "bad label line"
    CLASS_OUT_OF_RANGE = "class id out of range"
    COORDS_OUT_OF_RANGE = "coordinates outside [0,1]"
    ZERO_AREA_BOX = "zero-area box"
    LABEL_WITHOUT_IMAGE = "label without image"
    CONFLICTING_DUPLICATE = "same image twice with different labels"
    UNLABELED = "not labeled yet"
    UNKNOWN_CLASS = "unknown class"
    EMPTY_CLASS_FOLDER = "empty class folder"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class ValidationReport:
    """Counts per kind plus every problem, in the order found."""

    images: int = 0  # imported (after dedup), background included
    background: int = 0  # imported images without boxes (no label file or an empty one)
    duplicates: int = 0  # identical image + labels seen again (merged, not a problem)
    boxes: int = 0
    problems: list[Problem] = field(default_factory=list)
    task: Task = "detect"
    per_class: dict[str, int] = field(default_factory=dict)  # classify: images per class imported

    def add(self, kind: ProblemKind, file: str, message: str) -> Problem:
        p = Problem(kind, file, message)
        self.problems.append(p)
        return p

    def counts(self) -> dict[str, int]:
        """Summary rows: imported counts first, then one row per problem kind found."""
        rows = {"images imported": self.images}
        if self.task == "classify":
            rows.update({f"class {c}": n for c, n in self.per_class.items()})
        else:
            rows.update({"background images (no boxes)": self.background, "boxes": self.boxes})
        if self.duplicates:
            rows["identical duplicates merged"] = self.duplicates
        c = Counter(p.kind for p in self.problems)
        for kind in ProblemKind:
            if c.get(kind):
                rows[kind.value] = c[kind]
        return rows

    def raise_if_problems(self, limit: int = 3) -> None:
        """Strict mode: one line naming the first problems and how many there were."""
        if not self.problems:
            return
        first = "; ".join(str(p) for p in self.problems[:limit])
        more = f" (and {len(self.problems) - limit} more)" if len(self.problems) > limit else ""
        n = len(self.problems)
        raise ValidationError(f"strict import refused, {n} problem{'s' if n > 1 else ''}: {first}{more}")


BoxForm = Literal["yolo", "xywh_px", "xywh_pct"]


@dataclass(frozen=True)
class RawBox:
    """A box as its source wrote it, before any check.

    ``yolo``: normalized center x/y, width, height. ``xywh_px``: top-left x/y, width, height
    in pixels (COCO). ``xywh_pct``: the same in percent of the image, optionally rotated (degrees,
    around the top-left corner) — Label Studio's rectangle.
    """

    class_id: int
    x: float
    y: float
    w: float
    h: float
    form: BoxForm = "yolo"
    where: str = ""  # "labels/a.txt:3" — names the line in messages
    rotation: float = 0.0


class LabelError(Exception):
    """One label problem found while parsing; carries its kind for the report."""

    def __init__(self, kind: ProblemKind, message: str):
        super().__init__(message)
        self.kind = kind


def parse_yolo_text(text: str, file: str) -> list[RawBox]:
    """Parse a YOLO label file: ``class cx cy w h`` per line (polygons become their bounding box).

    Raises :class:`LabelError` for the first bad line (wrong field count, non-number).
    """
    out: list[RawBox] = []
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{file}:{n}"
        # 5 fields = box; 1 + 2k (k >= 3) = polygon, as Ultralytics segment labels are.
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise LabelError(ProblemKind.BAD_LABEL_LINE,
                             f"line {n}: expected 5 fields 'class cx cy w h', got {len(fields)}")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            raise LabelError(ProblemKind.BAD_LABEL_LINE, f"line {n}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise LabelError(ProblemKind.BAD_LABEL_LINE, f"line {n}: not a finite number")
        if values[0] != int(values[0]):
            raise LabelError(ProblemKind.BAD_LABEL_LINE, f"line {n}: class id {fields[0]!r} is not an integer")
        cls = int(values[0])
        if len(values) == 5:
            cx, cy, w, h = values[1:]
        else:
            xs, ys = values[1::2], values[2::2]
            cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
            w, h = max(xs) - min(xs), max(ys) - min(ys)
        out.append(RawBox(cls, cx, cy, w, h, "yolo", where))
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _to_yolo(b: RawBox, width: int, height: int) -> tuple[float, float, float, float]:
    if b.form == "yolo":
        return b.x, b.y, b.w, b.h
    if b.form == "xywh_px":
        return (b.x + b.w / 2) / width, (b.y + b.h / 2) / height, b.w / width, b.h / height
    # percent, possibly rotated about the top-left corner: take the axis-aligned hull in pixels
    x, y, w, h = b.x * width / 100, b.y * height / 100, b.w * width / 100, b.h * height / 100
    if b.rotation:
        t = math.radians(b.rotation)
        c, s = math.cos(t), math.sin(t)
        xs = [x, x + w * c, x + w * c - h * s, x - h * s]
        ys = [y, y + w * s, y + w * s + h * c, y + h * c]
        x, y, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return (x + w / 2) / width, (y + h / 2) / height, w / width, h / height


def normalize_boxes(raw: list[RawBox], num_classes: int, width: int, height: int) -> list[YoloBox]:
    """Convert to YOLO boxes and check them; raises :class:`LabelError` for the first bad one."""
    out: list[YoloBox] = []
    for b in raw:
        prefix = f"{b.where.rsplit(':', 1)[-1] if ':' in b.where else b.where}"
        at = f"line {prefix}: " if b.form == "yolo" and prefix.isdigit() else (f"{prefix}: " if prefix else "")
        if not 0 <= b.class_id < num_classes:
            raise LabelError(ProblemKind.CLASS_OUT_OF_RANGE,
                             f"{at}class id {b.class_id} is out of range (0..{num_classes - 1})")
        cx, cy, w, h = _to_yolo(b, width, height)
        if not all(math.isfinite(v) for v in (cx, cy, w, h)):
            raise LabelError(ProblemKind.BAD_LABEL_LINE, f"{at}not a finite number")
        if w <= 0 or h <= 0:
            raise LabelError(ProblemKind.ZERO_AREA_BOX, f"{at}box has zero area (w={w:g}, h={h:g})")
        edges = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if not all(-EPS <= v <= 1 + EPS for v in (cx, cy, w, h, *edges)):
            raise LabelError(ProblemKind.COORDS_OUT_OF_RANGE,
                             f"{at}coordinates outside [0,1] (cx={cx:g} cy={cy:g} w={w:g} h={h:g})")
        out.append(YoloBox(class_id=b.class_id, cx=_clip(cx), cy=_clip(cy), w=_clip(w), h=_clip(h)))
    return out


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v))

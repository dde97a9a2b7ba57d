"""A real classification set for tests: the boxes of ../shared/datasets/rock-paper-scissors, cropped.

One crop per box, its class as the label, the source's splits kept (``valid`` → ``val``), laid
out ImageNet style (``dest/{train,val,test}/{paper,rock,scissors}/*.jpg``) so the class-folder
importer reads it like any user's folder.
"""

from __future__ import annotations

from itertools import chain, zip_longest
from pathlib import Path

from PIL import Image

from conftest import RPS

RPS_CLASSES = ["paper", "rock", "scissors"]  # the order of RPS's data.yaml names (already sorted)
_SPLITS = {"train": "train", "valid": "val", "test": "test"}


def _crops(split_dir: Path) -> list[tuple[str, Path, tuple[int, int, int, int], str]]:
    """(class, image, pixel box, crop name) for every box of one split, in file order."""
    out = []
    for img in sorted((split_dir / "images").iterdir()):
        lbl = split_dir / "labels" / f"{img.stem}.txt"
        if not lbl.is_file():
            continue
        with Image.open(img) as im:
            w, h = im.size
        for k, line in enumerate(lbl.read_text().splitlines()):
            f = line.split()
            if len(f) != 5:
                continue
            cls, cx, cy, bw, bh = int(f[0]), *map(float, f[1:])
            box = (max(0, round((cx - bw / 2) * w)), max(0, round((cy - bh / 2) * h)),
                   min(w, round((cx + bw / 2) * w)), min(h, round((cy + bh / 2) * h)))
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:  # a degenerate box has no picture
                out.append((RPS_CLASSES[cls], img, box, f"{img.stem[:40]}_{k}.jpg"))
    return out


def _balanced(crops: list, limit: int | None) -> list:
    """The first ``limit`` crops taking classes in turn, so a small limit still has every class."""
    if limit is None:
        return crops
    by_class = [[c for c in crops if c[0] == name] for name in RPS_CLASSES]
    return [c for c in chain.from_iterable(zip_longest(*by_class)) if c is not None][:limit]


def rps_crops(dest: Path, limit_per_split: int | None = None) -> Path:
    """Write the crops under ``dest`` (made when missing) and return ``dest``."""
    dest = Path(dest)
    for src_split, split in _SPLITS.items():
        for cls, img, box, name in _balanced(_crops(RPS / src_split), limit_per_split):
            out = dest / split / cls / name
            out.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(img) as im:
                im.convert("RGB").crop(box).save(out, "JPEG", quality=90)
    return dest


def import_rps_crops(store, name: str, dest: Path, limit_per_split: int | None = None):
    """``rps_crops`` imported as a classify version of ``name``; returns its manifest."""
    from visionloop.datasets.formats import open_source
    from visionloop.datasets.ingest import ingest

    return ingest(store, open_source(str(rps_crops(dest, limit_per_split))), name).commit.manifest

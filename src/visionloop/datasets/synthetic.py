"""Generated data: coloured shapes on noisy backgrounds, with exact boxes (detection) or one
large shape per image whose class is the label (classification).

Learnable by a from-scratch YOLO in a few CPU epochs at small image sizes, so the demo and
the tests can assert that training really learns. Deterministic for a given seed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from ..predictions import Task
from .manifest import DatasetManifest, YoloBox

if TYPE_CHECKING:
    from ..store import Store

CLASSES = ["circle", "square", "triangle"]
_COLORS = [(230, 40, 40), (40, 200, 40), (40, 80, 230)]


@dataclass(frozen=True)
class SynthSample:
    name: str
    data: bytes  # PNG
    boxes: list[YoloBox]
    class_id: int | None = None  # classification: the one shape's class


def _draw_shape(draw: ImageDraw.ImageDraw, cls: int, x0: float, y0: float, s: float,
                color: tuple[int, int, int] | None = None) -> None:
    color = color or _COLORS[cls]
    if cls == 0:
        draw.ellipse([x0, y0, x0 + s, y0 + s], fill=color)
    elif cls == 1:
        draw.rectangle([x0, y0, x0 + s, y0 + s], fill=color)
    else:
        draw.polygon([(x0 + s / 2, y0), (x0, y0 + s), (x0 + s, y0 + s)], fill=color)


def render(rng: np.random.Generator, size: int = 320, max_objects: int = 3,
           min_frac: float = 0.18, max_frac: float = 0.4) -> tuple[Image.Image, list[YoloBox]]:
    """One image and its boxes; shapes never overlap so every box is exact."""
    bg = rng.integers(90, 170, size=(size, size, 3), dtype=np.int16)
    bg = np.clip(bg + rng.normal(0, 18, size=bg.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(bg)
    draw = ImageDraw.Draw(im)
    placed: list[tuple[float, float, float]] = []
    boxes: list[YoloBox] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            s = float(rng.uniform(min_frac, max_frac) * size)
            x0, y0 = (float(v) for v in rng.uniform(0, size - s, size=2))
            if all(x0 + s < px or px + ps < x0 or y0 + s < py or py + ps < y0 for px, py, ps in placed):
                break
        else:
            continue
        cls = int(rng.integers(0, len(CLASSES)))
        _draw_shape(draw, cls, x0, y0, s)
        placed.append((x0, y0, s))
        boxes.append(YoloBox(class_id=cls, cx=(x0 + s / 2) / size, cy=(y0 + s / 2) / size, w=s / size, h=s / size))
    return im, boxes


def render_classify(rng: np.random.Generator, size: int = 320) -> tuple[Image.Image, int]:
    """One large shape, roughly centred, on a noisy background; its class is the label.

    The shape fills most of the image so it survives a downscale to 32 px. Its colour is the
    class colour with jitter (shape alone needs many more epochs at 32 px: measured top-1
    0.56 vs 1.0 after 10 epochs on 300 images); size and position vary.
    """
    bg = rng.integers(90, 170, size=(size, size, 3), dtype=np.int16)
    bg = np.clip(bg + rng.normal(0, 18, size=bg.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(bg)
    cls = int(rng.integers(0, len(CLASSES)))
    s = float(rng.uniform(0.5, 0.8) * size)
    x0, y0 = (float(v) for v in rng.uniform(0, size - s, size=2))
    base = _COLORS[cls]
    jitter = rng.integers(-30, 31, size=3)
    color = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(base, jitter))
    _draw_shape(ImageDraw.Draw(im), cls, x0, y0, s, color)
    return im, cls


def generate(n: int, seed: int = 0, size: int = 320, task: Task = "detect") -> Iterator[SynthSample]:
    rng = np.random.default_rng(seed)
    for i in range(n):
        name = f"synth_{seed}_{i:05d}.png"
        if task == "classify":
            im, cls = render_classify(rng, size=size)
            yield SynthSample(name=name, data=png_bytes(im), boxes=[], class_id=cls)
        else:
            im, boxes = render(rng, size=size)
            yield SynthSample(name=name, data=png_bytes(im), boxes=boxes)


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def commit_generated(store: Store, name: str, n: int, seed: int = 0, size: int = 320,
                     source: str = "synthetic shapes", task: Task = "detect") -> DatasetManifest:
    """A new version of ``name`` holding ``n`` generated images (the demo's and the tests' data).

    ``task="classify"``: one shape per image, labelled with its class (``CLASSES`` is sorted,
    as classify manifests must be)."""
    from . import images
    from .catalog import Catalog, DraftImage

    drafts = []
    for s in generate(n, seed=seed, size=size, task=task):
        p = images.prepare(s.data)
        drafts.append(DraftImage(store.put_blob(p.data), p.ext, p.width, p.height, s.boxes,
                                 class_id=s.class_id, source=s.name))
    return Catalog(store).commit(name, CLASSES, drafts, task=task, source=source).manifest

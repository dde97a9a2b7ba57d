"""Draw detections (box, label, confidence) or top-k classes onto the image, as JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..predictions import Detections, class_name

_PALETTE = [(255, 56, 56), (72, 249, 10), (0, 194, 255), (255, 157, 151), (146, 204, 23), (61, 219, 134),
            (255, 178, 29), (207, 210, 49), (26, 147, 52), (0, 212, 187), (44, 153, 168), (52, 69, 147)]


def annotate(rgb: np.ndarray, detections: Detections | None, classes: list[str],
             top: list[tuple[int, float]] | None = None, quality: int = 90) -> bytes:
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    width = max(1, round(max(im.size) / 320))

    def label(x: float, y: float, text: str, color) -> None:
        l, t, r, b = draw.textbbox((x, y), text, font=font)
        y = y - (b - t) - 2 if y - (b - t) - 2 >= 0 else y
        l, t, r, b = draw.textbbox((x, y), text, font=font)
        draw.rectangle((l - 1, t - 1, r + 1, b + 1), fill=color)
        draw.text((x, y), text, fill=(255, 255, 255), font=font)

    dets = detections if detections is not None else Detections.empty()
    for (x1, y1, x2, y2), conf, c in zip(dets.xyxy.tolist(), dets.conf.tolist(), dets.cls.tolist()):
        color = _PALETTE[int(c) % len(_PALETTE)]
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        label(x1, y1, f"{class_name(classes, int(c))} {conf:.2f}", color)
    for i, (c, conf) in enumerate(top or []):
        label(4, 4 + 14 * i + 14, f"{class_name(classes, c)} {conf:.2f}", _PALETTE[c % len(_PALETTE)])
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()

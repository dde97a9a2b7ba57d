"""Image bytes in, checked image out: decode guard, size probe, optional downscale.

The pixel limit is checked from the header before any pixel is decoded, so a
decompression bomb costs nothing. Shared by every importer and by the synthetic generator.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ValidationError

MAX_PIXELS = 50_000_000  # ~7000x7000; larger is almost surely a bomb or a mistake
_EXT = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif", "MPO": "jpg"}


@dataclass(frozen=True)
class PreparedImage:
    data: bytes
    ext: str
    width: int
    height: int


def probe(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int, str]:
    """(width, height, extension) from the header; raises ValidationError for bad or huge images."""
    if not data:
        raise ValidationError("empty image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            fmt = im.format or ""
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, SyntaxError) as exc:
        if "decompression bomb" in str(exc).lower():
            raise ValidationError("image exceeds the pixel limit (decompression bomb)") from None
        raise ValidationError("not a readable image") from None
    if w * h > max_pixels:
        raise ValidationError(f"image {w}x{h} exceeds the pixel limit of {max_pixels} (decompression bomb)")
    if fmt not in _EXT:
        raise ValidationError(f"unsupported image format {fmt or 'unknown'}")
    return w, h, _EXT[fmt]


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Fully decode (catches truncated files) after the header check; EXIF orientation applied."""
    probe(data, max_pixels)
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (OSError, SyntaxError, ValueError):
        raise ValidationError("truncated or corrupt image") from None
    return ImageOps.exif_transpose(im)


def _has_exif_rotation(im: Image.Image) -> bool:
    try:
        return im.getexif().get(0x0112, 1) not in (1, None)
    except Exception:
        return False


def prepare(data: bytes, max_width: int | None = None) -> PreparedImage:
    """Validate and, when wider than ``max_width``, downscale (aspect kept, never upscaled).

    Untouched images keep their exact bytes (and hash); only resized or EXIF-rotated images
    are re-encoded. Normalized YOLO labels stay valid under a uniform scale.
    """
    w, h, ext = probe(data)
    im = decode(data)
    rotated = _has_exif_rotation(Image.open(io.BytesIO(data)))
    if (max_width and w > max_width) or rotated:
        if max_width and im.width > max_width:
            nh = max(1, round(im.height * max_width / im.width))
            im = im.resize((max_width, nh), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if ext == "png":
            im.save(buf, "PNG")
        else:
            im.convert("RGB").save(buf, "JPEG", quality=95)
            ext = "jpg"
        return PreparedImage(buf.getvalue(), ext, im.width, im.height)
    return PreparedImage(data, ext, w, h)

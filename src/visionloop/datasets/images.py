"""Image bytes in, checked image out: decode guard, size probe, optional downscale.

The pixel limit is checked from the header before any pixel is decoded, so a
decompression bomb costs nothing. Shared by every importer and by the synthetic generator.
"""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Callable
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
    source_width: int = 0  # upright size before any downscale: pixel labels are relative to it
    source_height: int = 0


def pillow_open() -> Callable[..., Image.Image]:
    """Pillow's own ``Image.open``. Importing ultralytics replaces it with one that, on input
    Pillow cannot identify, tries to pip-install pi-heif and fails offline with an ImportError;
    a bad image must stay "not a readable image" in any process that also trains."""
    fn = Image.open
    if getattr(fn, "__module__", "PIL.Image") != "PIL.Image":
        fn = getattr(sys.modules.get(fn.__module__), "_image_open", fn)
    return fn


def _open_checked(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """Parse the header only (no pixels) and refuse bombs and unknown formats."""
    if not data:
        raise ValidationError("empty image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = pillow_open()(io.BytesIO(data))
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
    return im, _EXT[fmt]


def _load(im: Image.Image) -> None:
    """Decode every pixel: the only reliable way to find truncated or corrupt files."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError):
        raise ValidationError("truncated or corrupt image") from None


def probe(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int, str]:
    """(width, height, extension) from the header; raises ValidationError for bad or huge images."""
    im, ext = _open_checked(data, max_pixels)
    return im.width, im.height, ext


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Fully decode (catches truncated files) after the header check; EXIF orientation applied."""
    im, _ = _open_checked(data, max_pixels)
    _load(im)
    return ImageOps.exif_transpose(im) if _has_exif_rotation(im) else im


def _has_exif_rotation(im: Image.Image) -> bool:
    try:
        return im.getexif().get(0x0112, 1) not in (1, None)
    except Exception:
        return False


def prepare(data: bytes, max_width: int | None = None) -> PreparedImage:
    """Validate and, when wider than ``max_width``, downscale (aspect kept, never upscaled).

    Untouched images keep their exact bytes (and hash); only resized or EXIF-rotated images
    are re-encoded. Normalized YOLO labels stay valid under a uniform scale. The header is
    parsed once and the pixels decoded once; import speed is dominated by this decode, so a
    JPEG that is only checked is decoded at reduced scale (libjpeg still entropy-decodes the
    whole stream, which is what finds truncated or corrupt data) and one being downscaled is
    decoded at the smallest scale still at least as large as its target (as ``thumbnail`` does).
    """
    im, ext = _open_checked(data, MAX_PIXELS)
    w, h = im.size
    rotated = _has_exif_rotation(im)
    resize = bool(max_width and w > max_width)
    if not rotated:
        if not resize:
            im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))  # no-op for non-JPEG
        else:
            im.draft(im.mode, (max_width, max(1, round(h * max_width / w))))
    _load(im)
    if not (resize or rotated):
        return PreparedImage(data, ext, w, h, w, h)
    if rotated:
        im = ImageOps.exif_transpose(im)
    sw, sh = im.size if rotated else (w, h)  # upright size before scaling (a draft may be smaller)
    if max_width and sw > max_width:
        nh = max(1, round(sh * max_width / sw))
        im = im.resize((max_width, nh), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if ext == "png":
        im.save(buf, "PNG")
    else:
        im.convert("RGB").save(buf, "JPEG", quality=95)
        ext = "jpg"
    return PreparedImage(buf.getvalue(), ext, im.width, im.height, sw, sh)

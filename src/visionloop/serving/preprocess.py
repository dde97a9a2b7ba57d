"""Image bytes → model input tensor, in pure numpy, matching ultralytics' predictor.

Parity notes (checked by tests against ultralytics itself):
- ultralytics reads with ``cv2.imread`` (libjpeg-turbo, EXIF orientation applied, alpha dropped).
  Pillow decodes JPEG/PNG to the same pixels, applies EXIF with ``exif_transpose`` and, unlike
  OpenCV, *fails* on a truncated file instead of returning a half-grey image, so we decode with
  Pillow (reusing the dataset importer's header probe, which refuses decompression bombs before
  any pixel is decoded).
- ``LetterBox(auto=False, center=True)`` with ``cv2.INTER_LINEAR`` and pad 114: reproduced by
  :func:`letterbox`. When OpenCV is installed (it comes with ultralytics, it is optional for a
  server) its resize is used, bit-identical and ~40x faster on large images; otherwise a numpy
  half-pixel-centred bilinear resize that differs by at most one grey level.
- Classification models use torchvision's ``Resize(short side) + CenterCrop`` on a PIL image
  (bilinear with antialias), which is Pillow's own resize.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

try:  # optional: exact and fast; the numpy path below is the portable fallback
    import cv2 as _cv2
except ImportError:  # pragma: no cover - depends on the install
    _cv2 = None

from ..datasets import images
from ..errors import ValidationError
from .errors import ApiError, bad_image, too_large

PAD_VALUE = 114


@dataclass(frozen=True)
class DecodedImage:
    """An RGB uint8 array (H, W, 3) in display orientation (EXIF applied)."""

    rgb: np.ndarray

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


@dataclass(frozen=True)
class Letterbox:
    """How an original image was placed into the model input (ultralytics' scale_boxes terms)."""

    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int
    orig_w: int
    orig_h: int


def decode_image(data: bytes, max_pixels: int = images.MAX_PIXELS) -> DecodedImage:
    """Decode bytes to RGB; 400 unreadable/truncated, 413 over the pixel limit, 415 unsupported format."""
    try:
        im = images.decode(data, max_pixels)
    except ValidationError as exc:
        msg = str(exc)
        if "pixel limit" in msg:
            raise too_large(msg) from None
        if msg.startswith("unsupported image format"):
            raise ApiError(415, "unsupported_media_type", msg) from None
        raise bad_image(msg) from None
    return DecodedImage(_to_rgb(im))


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit: OpenCV keeps the high byte
        arr = (np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGB")  # drops alpha without blending, like cv2.IMREAD_COLOR
    return np.asarray(im)


def decode_array(rgb: np.ndarray) -> DecodedImage:
    """Wrap an already-decoded RGB array (tests, bench)."""
    return DecodedImage(np.ascontiguousarray(rgb, dtype=np.uint8))


@lru_cache(maxsize=64)
def _axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights along one axis, OpenCV INTER_LINEAR style (half-pixel centres)."""
    f = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    i0 = np.floor(f).astype(np.intp)
    w = f - i0
    low = i0 < 0
    i0[low], w[low] = 0, 0.0
    high = i0 >= src - 1
    i0[high], w[high] = src - 1, 0.0
    i1 = np.minimum(i0 + 1, src - 1)
    w = np.round(w * 2048) / 2048  # OpenCV's 11-bit fixed-point weights
    return i0, i1, w.astype(np.float32)


def resize_bilinear(img: np.ndarray, width: int, height: int, use_cv2: bool = True) -> np.ndarray:
    """Bilinear resize of an (H, W, C) uint8 array, like ``cv2.resize(..., INTER_LINEAR)``."""
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    if use_cv2 and _cv2 is not None:
        return _cv2.resize(img, (width, height), interpolation=_cv2.INTER_LINEAR)
    y0, y1, wy = _axis(h, height)
    x0, x1, wx = _axis(w, width)
    wy, wx = wy[:, None, None], wx[None, :, None]
    if height * w <= h * width:  # do the pass that shrinks more first: less work
        top, bot = img[y0].astype(np.float32), img[y1].astype(np.float32)
        rows = top + (bot - top) * wy
        out = rows[:, x0] + (rows[:, x1] - rows[:, x0]) * wx
    else:
        left, right = img[:, x0].astype(np.float32), img[:, x1].astype(np.float32)
        cols = left + (right - left) * wx
        out = cols[y0] + (cols[y1] - cols[y0]) * wy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def letterbox(img: np.ndarray, size: tuple[int, int], stride: int | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect and pad to ``size`` (h, w) with grey 114, centred (ultralytics LetterBox).

    ``stride`` (models with a dynamic input size): pad only to the next multiple of the stride
    (ultralytics' ``auto=True``), e.g. 640x384 for a 16:9 image instead of 640x640 — 40% less work.
    """
    h0, w0 = img.shape[:2]
    th, tw = size
    r = min(th / h0, tw / w0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = tw - new_w, th - new_h
    if stride:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    resized = resize_bilinear(img, new_w, new_h)
    out = np.full((new_h + top + bottom, new_w + left + right, 3), PAD_VALUE, dtype=np.uint8)
    out[top:top + new_h, left:left + new_w] = resized
    return out, Letterbox(new_w / w0, new_h / h0, left, top, w0, h0)


def to_tensor(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (1, 3, H, W) float32 in 0..1, contiguous for onnxruntime."""
    chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    chw /= 255.0
    return chw[None]


def classify_input(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shortest side to ``size``, centre crop (ultralytics' classify_transforms), as a tensor."""
    th, tw = size
    pil = Image.fromarray(img)
    w, h = pil.size
    if th == tw:  # torchvision Resize(int): the short side becomes th, the long one is truncated
        if w <= h:
            nw, nh = th, int(th * h / w)
        else:
            nw, nh = int(th * w / h), th
    else:
        nw, nh = tw, th
    pil = pil.resize((max(nw, 1), max(nh, 1)), Image.Resampling.BILINEAR)
    left, top = int(round((nw - tw) / 2.0)), int(round((nh - th) / 2.0))
    crop = np.asarray(pil.crop((left, top, left + tw, top + th)))
    return to_tensor(crop)

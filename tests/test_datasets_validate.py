"""Pure checks: label parsing, box normalization, the report, image preparation."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from datasets_fixtures import bomb_png, jpg, png
from visionloop.datasets import images
from visionloop.datasets.validate import (
    LabelError,
    ProblemKind,
    RawBox,
    ValidationReport,
    normalize_boxes,
    parse_yolo_text,
)
from visionloop.errors import ValidationError


def test_parse_yolo_text_boxes_polygons_blank_lines():
    text = "0 0.5 0.5 0.2 0.4\n\n2 0.1 0.1 0.3 0.1 0.3 0.3\n   \n1 0.25 0.75 0.5 0.5"  # no final newline
    boxes = parse_yolo_text(text, "labels/a.txt")
    assert [b.class_id for b in boxes] == [0, 2, 1]
    assert (boxes[0].x, boxes[0].y, boxes[0].w, boxes[0].h) == (0.5, 0.5, 0.2, 0.4)
    poly = boxes[1]  # polygon (0.1,0.1) (0.3,0.1) (0.3,0.3) → its bounding box
    assert poly.x == pytest.approx(0.2) and poly.y == pytest.approx(0.2)
    assert poly.w == pytest.approx(0.2) and poly.h == pytest.approx(0.2)
    assert boxes[2].where == "labels/a.txt:5"


@pytest.mark.parametrize("text, message", [
    ("0 0.5 0.5 0.2\n", "line 1: expected 5 fields 'class cx cy w h', got 4"),
    ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2 0.1\n", "line 2: expected 5 fields 'class cx cy w h', got 6"),
    ("0 0.5 abc 0.2 0.2\n", "line 1: 'abc' is not a number"),
    ("0 0.5 nan 0.2 0.2\n", "line 1: not a finite number"),
    ("1.5 0.5 0.5 0.2 0.2\n", "line 1: class id '1.5' is not an integer"),
])
def test_parse_yolo_text_bad_lines(text, message):
    with pytest.raises(LabelError) as exc:
        parse_yolo_text(text, "labels/a.txt")
    assert exc.value.kind is ProblemKind.BAD_LABEL_LINE
    assert str(exc.value) == message


@pytest.mark.parametrize("box, kind, message", [
    (RawBox(3, 0.5, 0.5, 0.2, 0.2, where="l.txt:1"), ProblemKind.CLASS_OUT_OF_RANGE,
     "line 1: class id 3 is out of range (0..2)"),
    (RawBox(-1, 0.5, 0.5, 0.2, 0.2, where="l.txt:2"), ProblemKind.CLASS_OUT_OF_RANGE,
     "line 2: class id -1 is out of range (0..2)"),
    (RawBox(0, 1.5, 0.5, 0.2, 0.2, where="l.txt:1"), ProblemKind.COORDS_OUT_OF_RANGE,
     "line 1: coordinates outside [0,1] (cx=1.5 cy=0.5 w=0.2 h=0.2)"),
    (RawBox(0, 0.95, 0.5, 0.2, 0.2, where="l.txt:1"), ProblemKind.COORDS_OUT_OF_RANGE,
     "line 1: coordinates outside [0,1] (cx=0.95 cy=0.5 w=0.2 h=0.2)"),
    (RawBox(0, 0.5, 0.5, 0.0, 0.2, where="l.txt:1"), ProblemKind.ZERO_AREA_BOX,
     "line 1: box has zero area (w=0, h=0.2)"),
    (RawBox(0, 10, 10, 0, 5, form="xywh_px", where="annotation 7"), ProblemKind.ZERO_AREA_BOX,
     "annotation 7: box has zero area (w=0, h=0.05)"),
])
def test_normalize_boxes_rejects(box, kind, message):
    with pytest.raises(LabelError) as exc:
        normalize_boxes([box], 3, 100, 100)
    assert exc.value.kind is kind
    assert str(exc.value) == message


def test_normalize_boxes_converts_every_form():
    px = RawBox(1, 10, 20, 40, 20, form="xywh_px")  # COCO, image 200x100
    pct = RawBox(0, 5, 20, 20, 20, form="xywh_pct")  # Label Studio percent
    yolo = RawBox(2, 0.5, 0.5, 1.0, 1.0)
    out = normalize_boxes([px, pct, yolo], 3, 200, 100)
    assert (out[0].class_id, out[0].cx, out[0].cy, out[0].w, out[0].h) == (1, 0.15, 0.3, 0.2, 0.2)
    assert (out[1].cx, out[1].cy, out[1].w, out[1].h) == pytest.approx((0.15, 0.3, 0.2, 0.2))
    assert (out[2].cx, out[2].w) == (0.5, 1.0)


def test_rotated_percent_box_becomes_its_hull():
    # a 20x10 px rectangle at (50,50) rotated 90° about its top-left corner covers x 40..50, y 50..70
    b = RawBox(0, 50, 50, 20, 10, form="xywh_pct", rotation=90)
    (out,) = normalize_boxes([b], 1, 100, 100)
    assert (out.cx, out.cy, out.w, out.h) == pytest.approx((0.45, 0.6, 0.1, 0.2))


def test_float_noise_on_the_edge_is_clipped_not_refused():
    (out,) = normalize_boxes([RawBox(0, 0.5, 0.5, 1.0000001, 0.5)], 1, 10, 10)
    assert out.w == 1.0


def test_report_counts_and_strict_message():
    r = ValidationReport(images=5, background=2, boxes=4)
    r.add(ProblemKind.ZERO_AREA_BOX, "labels/a.txt", "line 1: box has zero area (w=0, h=0.2)")
    r.add(ProblemKind.LABEL_WITHOUT_IMAGE, "labels/b.txt", "label file has no matching image in images/")
    assert r.counts() == {"images imported": 5, "background images (no boxes)": 2, "boxes": 4,
                          "zero-area box": 1, "label without image": 1}
    with pytest.raises(ValidationError) as exc:
        r.raise_if_problems(limit=1)
    assert str(exc.value) == ("strict import refused, 2 problems: labels/a.txt: line 1: box has zero area "
                              "(w=0, h=0.2) (and 1 more)")
    ValidationReport().raise_if_problems()  # nothing found: no error


def test_prepare_keeps_bytes_when_untouched():
    data = png(80, 40, seed=1)
    p = images.prepare(data)
    assert p.data == data and (p.width, p.height, p.ext) == (80, 40, "png")
    assert images.prepare(data, max_width=200).data == data  # never upscaled


def test_prepare_downscales_wide_images_keeping_aspect():
    p = images.prepare(jpg(400, 100, seed=2), max_width=100)
    im = Image.open(io.BytesIO(p.data))
    assert im.size == (100, 25) == (p.width, p.height)
    assert (p.source_width, p.source_height) == (400, 100)


def test_prepare_applies_exif_rotation():
    im = Image.new("RGB", (60, 20), (200, 10, 10))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° when displayed
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    p = images.prepare(buf.getvalue())
    assert (p.width, p.height) == (20, 60)
    assert Image.open(io.BytesIO(p.data)).size == (20, 60)


@pytest.mark.parametrize("data, message", [
    (b"", "empty image file"),
    (b"this is not an image", "not a readable image"),
    (jpg(200, 200, seed=3)[:1500], "truncated or corrupt image"),
    (bomb_png(), "image 8000x8000 exceeds the pixel limit of 50000000 (decompression bomb)"),
])
def test_prepare_rejects_bad_images(data, message):
    with pytest.raises(ValidationError) as exc:
        images.prepare(data)
    assert str(exc.value) == message


def test_a_bad_image_is_unreadable_even_after_ultralytics_patched_pillow():
    """Importing ultralytics replaces PIL.Image.open with one that tries to pip-install pi-heif on
    unknown input; the importer keeps Pillow's own open, so training processes get the same error."""
    import subprocess
    import sys

    code = ("import ultralytics\nfrom visionloop.datasets import images\nfrom visionloop.errors import ValidationError\n"
            "try:\n    images.prepare(b'this is not an image')\nexcept ValidationError as e:\n    print('ok', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "YOLO_OFFLINE": "1"})
    assert r.stdout.strip() == "ok not a readable image", r.stderr[-2000:]

"""Uncertainty scores, disagreement and the model-free image signals, on hand-made predictions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visionloop.errors import ValidationError
from visionloop.feedback.inbox import CaptureRecord
from visionloop.feedback.scoring import (
    SCORES,
    ImageScores,
    dhash,
    disagreement,
    hamming,
    score_classification,
    score_detections,
    score_record,
    thumbnail_embedding,
)
from visionloop.predictions import ClassScore, Detection, Detections, PixelBox


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    return Detections.from_rows(np.array(rows, np.float32).reshape(-1, 6))


# -- detection scores -------------------------------------------------------------------------------
@pytest.mark.parametrize("aggregate, expected", [("max", 0.7), ("mean", 0.4), ("sum", 0.8)])
def test_least_confidence_aggregates(aggregate, expected):
    s = score_detections(np.array([0.9, 0.3]), None, 0.25, aggregate=aggregate)
    assert s.least_confidence == pytest.approx(expected)
    assert s.aggregate == aggregate and s.detection_count == 2 and not s.no_detection


def test_margin_and_entropy_from_class_score_vectors():
    s = score_detections(np.array([0.6]), np.array([[0.6, 0.5, 0.1]]), 0.25)
    assert s.margin == pytest.approx(0.9)
    assert s.classes == [0]  # argmax of the class scores
    uniform = score_detections(np.array([0.25]), np.full((1, 4), 0.25), 0.25)
    onehot = score_detections(np.array([1.0]), np.array([[0.0, 1.0, 0.0, 0.0]]), 0.25)
    assert uniform.entropy == pytest.approx(1.0) and uniform.margin == pytest.approx(1.0)
    assert onehot.entropy == pytest.approx(0.0) and onehot.margin == pytest.approx(0.0)
    assert onehot.classes == [1]


def test_sigmoid_scores_are_normalized_for_the_entropy():
    """YOLO class scores are independent sigmoids: equal scores are uniform whatever their sum."""
    s = score_detections(np.array([0.1]), np.array([[0.1, 0.1]]), 0.25)
    assert s.entropy == pytest.approx(1.0)


def test_without_class_scores_margin_and_entropy_are_binary():
    s = score_detections(np.array([0.5, 0.9]), None, 0.25, aggregate="mean", cls=np.array([3, 1]))
    assert s.margin == pytest.approx((1.0 + (1 - 0.8)) / 2)
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)
    assert s.entropy == pytest.approx((1.0 + h) / 2)
    assert s.classes == [3, 1]


def test_close_to_threshold():
    at = score_detections(np.array([0.4]), None, 0.4)
    assert at.close_to_threshold == pytest.approx(1.0)
    far = score_detections(np.array([1.0]), None, 0.4)
    assert far.close_to_threshold == pytest.approx(0.0)  # |1 - 0.4| / max(0.4, 0.6)
    mid = score_detections(np.array([0.7]), None, 0.4)
    assert mid.close_to_threshold == pytest.approx(0.5)


def test_no_detection():
    s = score_detections(np.zeros(0), None, 0.25)
    # the server's runtime passes the (0, nc) class scores of no box
    assert score_detections(np.zeros(0), np.zeros((0, 3)), 0.25, cls=np.zeros(0)) == s
    assert s.no_detection and s.detection_count == 0 and s.classes == []
    assert (s.least_confidence, s.margin, s.entropy, s.close_to_threshold) == (1.0, 1.0, 1.0, 0.0)


def test_value_by_name_and_bad_names():
    s = score_detections(np.array([0.9, 0.3]), None, 0.3)
    assert [s.value(n) for n in SCORES] == [s.least_confidence, s.margin, s.entropy, s.close_to_threshold]
    with pytest.raises(ValueError, match="least_confidence, margin, entropy, close_to_threshold"):
        s.value("confidence")
    with pytest.raises(ValidationError, match="max, mean, sum"):  # one line for the CLI as well
        score_detections(np.array([0.5]), None, 0.25, aggregate="median")


def test_scores_round_trip_as_json():
    s = score_detections(np.array([0.9, 0.3]), None, 0.25, cls=np.array([0, 2]))
    assert ImageScores.model_validate_json(s.model_dump_json()) == s


# -- classification --------------------------------------------------------------------------------
def test_classification_scores():
    s = score_classification(np.array([0.2, 0.5, 0.3]))
    assert s.least_confidence == pytest.approx(0.5)
    assert s.margin == pytest.approx(0.8)
    assert s.close_to_threshold == pytest.approx(0.8)
    h = -sum(p * np.log(p) for p in (0.5, 0.3, 0.2)) / np.log(3)
    assert s.entropy == pytest.approx(h)
    assert s.classes == [1] and not s.no_detection


def test_classification_entropy_extremes_and_top_k():
    assert score_classification(np.full(5, 0.2)).entropy == pytest.approx(1.0)
    assert score_classification(np.array([1.0, 0.0, 0.0])).entropy == pytest.approx(0.0)
    # top-2 of 4 classes: the missing 0.2 is spread over the 2 unlisted ones
    s = score_classification(np.array([0.6, 0.2]), class_ids=[7, 3], num_classes=4)
    h = -(0.6 * np.log(0.6) + 0.2 * np.log(0.2) + 2 * 0.1 * np.log(0.1)) / np.log(4)
    assert s.entropy == pytest.approx(h) and s.classes == [7]
    unknown = score_classification(np.array([0.6, 0.2]))  # the missing mass as one bucket
    assert unknown.entropy == pytest.approx(-(0.6 * np.log(0.6) + 2 * 0.2 * np.log(0.2)) / np.log(3))


# -- stored records ----------------------------------------------------------------------------------
def _record(**kw) -> CaptureRecord:
    return CaptureRecord(model="m", version="1", reason="low-confidence", image_sha256="0" * 64, ext=".jpg",
                         width=64, height=48, classes=["a", "b", "c"], **kw)


def test_score_record_matches_direct_scores():
    boxes = [Detection(class_id=2, class_name="c", confidence=0.9, box=PixelBox(x1=0, y1=0, x2=5, y2=5)),
             Detection(class_id=0, class_name="a", confidence=0.3, box=PixelBox(x1=9, y1=9, x2=20, y2=20))]
    rec = _record(detections=boxes)
    direct = score_detections(np.array([0.9, 0.3]), None, 0.3, aggregate="mean", cls=np.array([2, 0]))
    assert score_record(rec, threshold=0.3, aggregate="mean") == direct
    assert score_record(rec).classes == [2, 0]
    assert score_record(_record()).no_detection

    top = [ClassScore(class_id=1, class_name="b", confidence=0.5), ClassScore(class_id=0, class_name="a", confidence=0.3),
           ClassScore(class_id=2, class_name="c", confidence=0.2)]
    got = score_record(_record(top=top))
    assert got == score_classification(np.array([0.5, 0.3, 0.2]), class_ids=[1, 0, 2])
    assert got.least_confidence == pytest.approx(0.5) and got.margin == pytest.approx(0.8) and got.classes == [1]


# -- disagreement -------------------------------------------------------------------------------------
A = dets((0, 0, 10, 10, 0.9, 0), (20, 20, 40, 40, 0.8, 1))


def test_disagreement():
    assert disagreement(A, A) == 0.0
    assert disagreement(A, dets((100, 100, 110, 110, 0.9, 0))) == 1.0
    assert disagreement(A, dets((0, 0, 10, 10, 0.5, 0))) == pytest.approx(0.5)  # one of two matched
    assert disagreement(Detections.empty(), Detections.empty()) == 0.0
    assert disagreement(A, Detections.empty()) == 1.0


def test_disagreement_needs_the_same_class_and_enough_overlap():
    assert disagreement(A, dets((0, 0, 10, 10, 0.9, 1), (20, 20, 40, 40, 0.8, 0))) == 1.0
    shifted = dets((0, 0, 10, 10, 0.9, 0), (30, 20, 50, 40, 0.8, 1))  # IoU 1/3 with A's second box
    assert disagreement(A, shifted) == pytest.approx(0.5)
    assert disagreement(A, shifted, iou=0.3) == 0.0


def test_disagreement_matches_greedily_one_to_one():
    """Two predicted boxes on one true box: only one of them matches it."""
    b = dets((0, 0, 10, 10, 0.9, 0), (0, 0, 10, 11, 0.8, 0))
    assert disagreement(dets((0, 0, 10, 10, 0.9, 0)), b) == pytest.approx(0.5)


# -- image signals ------------------------------------------------------------------------------------
def _scene(seed: int, size=(320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.integers(0, size[0] - 60), rng.integers(0, size[1] - 60)
        w, h = rng.integers(20, 60, 2)
        draw.rectangle([int(x), int(y), int(x + w), int(y + h)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_dhash_survives_resize_and_jpeg_and_tells_images_apart():
    a = _scene(1)
    h = dhash(a)
    assert 0 <= h < 1 << 64
    assert dhash(a) == h  # deterministic
    assert hamming(h, dhash(_jpeg(a.resize((160, 120)), 60))) <= 4
    assert hamming(h, dhash(_jpeg(a, 30))) <= 4
    others = [hamming(h, dhash(_scene(s))) for s in range(2, 8)]
    assert min(others) > 10, others


def test_hamming():
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(5, 5) == 0
    assert hamming(0, (1 << 64) - 1) == 64


def test_thumbnail_embedding():
    a = _scene(1)
    e = thumbnail_embedding(a)
    assert e.dtype == np.float32 and e.shape == (16 * 16 * 3,)
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(e, thumbnail_embedding(a))
    same = thumbnail_embedding(_jpeg(a.resize((160, 120)), 70))
    other = thumbnail_embedding(_scene(2))
    assert float(e @ same) > 0.9 > float(e @ other)
    # per-channel standardization: a brighter copy embeds (almost) the same
    brighter = Image.fromarray(np.clip(np.asarray(a, np.int16) // 2 + 100, 0, 255).astype(np.uint8))
    assert float(e @ thumbnail_embedding(brighter)) > 0.99
    assert np.all(np.isfinite(thumbnail_embedding(Image.new("RGB", (8, 8), (9, 9, 9)))))

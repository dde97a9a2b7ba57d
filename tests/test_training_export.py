"""Parity matching as pure numpy: twins, NMS ties, real differences; ONNX metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from visionloop.errors import VisionloopError
from visionloop.predictions import Detections, box_iou
from visionloop.training.export import (
    ParityReport,
    match_detections,
    read_metadata,
    require_parity,
    write_metadata,
)


def dets(rows):
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(int))


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_identical_detections_match():
    d = dets([[0, 0, 10, 10, 0.9, 1], [20, 20, 40, 40, 0.5, 0]])
    n, iou, diff, ties, unmatched = match_detections(d, d)
    assert (n, ties, unmatched) == (2, 0, 0)
    assert iou == pytest.approx(1.0) and diff == 0.0


def test_shifted_box_or_other_class_or_conf_is_a_mismatch():
    ref = dets([[0, 0, 100, 100, 0.9, 1]])
    assert match_detections(ref, dets([[0, 0, 100, 100.5, 0.9, 1]]))[4] == 0  # IoU 0.995: a twin
    assert match_detections(ref, dets([[0, 0, 100, 103, 0.9, 1]]))[4] == 1  # IoU 0.97
    assert match_detections(ref, dets([[0, 0, 100, 100, 0.9, 2]]))[4] == 1  # other class
    assert match_detections(ref, dets([[0, 0, 100, 100, 0.88, 1]]))[4] == 1  # conf off by 0.02
    assert match_detections(ref, dets([]))[4] == 1


def test_nms_tie_is_not_a_difference():
    # PyTorch kept box A; ONNX computed A too (its raw candidates) but NMS kept the overlapping B.
    ref = dets([[0, 0, 100, 100, 0.00512, 0]])
    other = dets([[0, 0, 100, 110, 0.00515, 0]])  # IoU 0.91 >= NMS 0.7, scores within 1e-3
    other_raw = dets([[0, 0, 100, 110, 0.00515, 0], [0, 0, 100, 100.2, 0.00512, 0]])
    n, _, _, ties, unmatched = match_detections(ref, other, other_raw)
    assert (n, ties, unmatched) == (1, 1, 0)
    # without A's twin among the raw candidates, the same picture is a real difference
    assert match_detections(ref, other, dets([[0, 0, 100, 110, 0.00515, 0]]))[3:] == (0, 1)
    assert match_detections(ref, other)[3:] == (0, 1)
    # a kept neighbour scoring far lower could not have suppressed A
    low = dets([[0, 0, 100, 110, 0.001, 0]])
    assert match_detections(ref, low, other_raw)[3:] == (0, 1)


def test_require_parity():
    with pytest.raises(VisionloopError, match="compared no boxes"):
        require_parity(ParityReport(images=3))
    with pytest.raises(VisionloopError, match="compared no boxes"):
        require_parity(ParityReport(images=3, compared=4, ties=4))
    with pytest.raises(VisionloopError, match="differs"):
        require_parity(ParityReport(images=1, compared=4, mismatches=["a.jpg: 1 onnx boxes without a twin"]))
    require_parity(ParityReport(images=1, compared=4, ties=1))


def test_metadata_round_trip(tiny_model, tmp_path):
    import shutil

    onnx = tmp_path / "m.onnx"
    shutil.copyfile(tiny_model.onnx, onnx)
    before = read_metadata(onnx)
    assert {"names", "imgsz", "stride", "task"} <= set(before)  # what ultralytics writes
    meta = write_metadata(onnx, {"classes": json.dumps(tiny_model.classes), "dataset": "tiny@1"})
    again = read_metadata(onnx)
    assert again == meta
    assert json.loads(again["classes"]) == tiny_model.classes
    assert again["task"] == "detect" and again["stride"] == before["stride"]

"""What the server captures, bounded and scored: caps per window, quotas per predicted class, and
the uncertainty scores stored on each capture (from the class scores the runtime keeps)."""

from __future__ import annotations

import numpy as np
import pytest

from capture_helpers import metric, png, serving, wait_for
from serving_helpers import constant_model

from visionloop.feedback.inbox import list_captures
from visionloop.serving.capture import CapturePolicy
from visionloop.serving.capture_limits import CaptureLimits, Window, parse_windows
from visionloop.serving.postprocess import decode_yolo_head, decode_yolo_head_scores
from visionloop.store import Store


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_parse_windows():
    assert parse_windows("20/min,300/h,2000/d", "--capture-caps") == (Window(20, 60.0), Window(300, 3600.0),
                                                                       Window(2000, 86400.0))
    assert parse_windows("off", "--capture-caps") == () == parse_windows("0", "--capture-caps")
    for bad in ("5/week", "many/min", "1.5/min"):
        with pytest.raises(ValueError, match="--capture-caps"):
            parse_windows(bad, "--capture-caps")


def test_caps_are_sliding_windows_per_model():
    clock = Clock()
    lim = CaptureLimits([Window(2, 60), Window(3, 3600)], clock=clock)
    assert [lim.admit("m", []) for _ in range(3)] == [None, None, "capture_cap"]
    assert lim.admit("other", []) is None  # per model
    clock.now = 59.9
    assert lim.admit("m", []) == "capture_cap"
    clock.now = 60.0  # the minute window slides; the hour still has room for one
    assert lim.admit("m", []) is None
    clock.now = 125.0
    assert lim.admit("m", []) == "capture_cap"  # 3 in the hour
    clock.now = 3600.0
    assert lim.admit("m", []) is None


def test_class_quotas_hold_and_a_refusal_counts_nothing():
    clock = Clock()
    lim = CaptureLimits(class_quota=[Window(1, 3600)], clock=clock)
    assert lim.admit("m", [0]) is None
    assert lim.admit("m", [0, 0]) == "class_quota"
    assert lim.admit("m", [0, 1]) == "class_quota"  # class 0 is full: the image is refused whole...
    assert lim.admit("m", [1]) is None  # ...and class 1's quota was not used by that refusal
    assert lim.admit("m", [1]) == "class_quota"
    assert lim.admit("m", []) is None  # no predicted class: no quota applies
    assert CaptureLimits().admit("m", [0]) is None and not CaptureLimits().enabled


def _raw_head() -> np.ndarray:
    """(1, 4 + 2, 3): a dog at 0.7 (cat 0.2), a cat at 0.45 (dog 0.4), and one under any threshold."""
    pred = np.zeros((1, 6, 3), np.float32)
    pred[0, :, 0] = [32, 32, 16, 16, 0.2, 0.7]
    pred[0, :, 1] = [10, 10, 8, 8, 0.45, 0.4]
    pred[0, :, 2] = [50, 50, 4, 4, 0.01, 0.02]
    return pred


def test_decode_keeps_each_boxes_class_scores():
    rows, scores = decode_yolo_head_scores(_raw_head()[0], 0.25, 0.7, 300)
    np.testing.assert_array_equal(rows, decode_yolo_head(_raw_head()[0], 0.25, 0.7, 300))
    assert scores.shape == (2, 2)
    np.testing.assert_allclose(scores.max(1), rows[:, 4])
    np.testing.assert_array_equal(scores.argmax(1), rows[:, 5])
    np.testing.assert_allclose(sorted(map(tuple, scores)), [(0.2, 0.7), (0.45, 0.4)], rtol=1e-6)
    none_rows, none_scores = decode_yolo_head_scores(_raw_head()[0], 0.9, 0.7, 300)
    assert none_rows.shape == (0, 6) and none_scores.shape == (0, 2)


def _model(tmp_path):
    return constant_model(tmp_path / "raw.onnx", _raw_head(), {"names": "{0: 'cat', 1: 'dog'}", "imgsz": "[64, 64]",
                                                               "task": "detect", "stride": "32"})


def _predict(client, value: int) -> None:
    r = client.post("/v1/models/raw/predict", files={"file": ("a.png", png(value))})
    assert r.status_code == 200 and len(r.json()["detections"]) == 2, r.text


def test_captures_carry_scores_and_respect_caps(tmp_path):
    from visionloop.serving.config import ServeConfig

    url = str(tmp_path / "store")
    policy = CapturePolicy(mode="all", caps=(Window(3, 3600),), aggregate="max")
    with serving(ServeConfig(models=[f"raw={_model(tmp_path)}"], store_url=url, capture=policy,
                             prediction_log=False)) as (client, _):
        for v in (10, 20, 30, 40, 50):
            _predict(client, v)
        assert wait_for(lambda: metric(client, "visionloop_captures_total", model="raw") == 3)
        assert metric(client, "visionloop_captures_dropped_total", model="raw", why="capture_cap") == 2
    records = list_captures(Store(url), "raw")
    assert len(records) == 3
    for rec in records:
        s = rec.scores
        assert s is not None and s.detection_count == 2 and sorted(s.classes) == [0, 1]
        assert s.least_confidence == pytest.approx(0.55)  # max over boxes of 1 - conf
        assert s.margin == pytest.approx(0.95)  # the cat box: 1 - (0.45 - 0.4), from the runner-up class
        assert s.close_to_threshold == pytest.approx(1 - 0.2 / 0.75)  # conf 0.45 against the request's 0.25


def test_class_quota_on_the_server(tmp_path):
    from visionloop.serving.config import ServeConfig

    url = str(tmp_path / "store")
    policy = CapturePolicy(mode="all", class_quota=(Window(2, 86400),), aggregate="mean")
    with serving(ServeConfig(models=[f"raw={_model(tmp_path)}"], store_url=url, capture=policy,
                             prediction_log=False)) as (client, _):
        for v in (10, 20, 30, 40):
            _predict(client, v)
        assert wait_for(lambda: metric(client, "visionloop_captures_total", model="raw") == 2)
        assert metric(client, "visionloop_captures_dropped_total", model="raw", why="class_quota") == 2
    records = list_captures(Store(url), "raw")
    assert len(records) == 2 and all(r.scores.aggregate == "mean" for r in records)
    assert records[0].scores.least_confidence == pytest.approx((0.3 + 0.55) / 2)

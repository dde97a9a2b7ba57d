"""``evaluate_model`` against boxes whose mAP is known by construction.

The model is a hand-built ONNX graph that ignores its input and always answers the same boxes;
every test image carries the same labels. So what the model "predicts" for each image is
chosen here, and the expected AP per class follows from the boxes alone: exact boxes are a
perfect class, a missing class scores 0, and a box shifted to IoU 0.725 is a true positive at
the IoU thresholds 0.50-0.70 and a false one at 0.75-0.95 (5 of the 10 of mAP50-95).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from visionloop.errors import ValidationError
from visionloop.training.evaluate import evaluate_model

SIZE = 160  # square images at the model's input size: the letterbox is the identity
CLASSES = ["circle", "square", "triangle"]
# one label set for every test image: class, cx, cy, w, h (normalized)
LABELS = [(0, 0.25, 0.25, 0.2, 0.2), (1, 0.7, 0.3, 0.2, 0.3), (2, 0.5, 0.75, 0.3, 0.2)]
# ultralytics integrates a perfect precision/recall curve over 101 points with a (recall 1,
# precision 0) sentinel at the end: the last trapezoid halves, so a perfect class scores 0.995.
PERFECT = 0.995
SHIFT = 5.1  # pixels along x on the 32-px-wide class-1 box: IoU (32-5.1)/(32+5.1) = 0.725


def _pixels(cx: float, cy: float, w: float, h: float) -> list[float]:
    return [cx * SIZE, cy * SIZE, w * SIZE, h * SIZE]


def constant_model(path: Path, boxes: list[tuple[int, list[float]]]) -> Path:
    """An ONNX "detector" whose output is always ``boxes`` ((class, [cx, cy, w, h] pixels), conf 0.9)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = np.zeros((1, 4 + len(CLASSES), max(len(boxes), 1)), np.float32)
    for a, (cls, xywh) in enumerate(boxes):
        out[0, :4, a] = xywh
        out[0, 4 + cls, a] = 0.9
    nodes = [  # output = constant + 0 * mean(input): the graph consumes its input, answers the constant
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["answer", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "constant-detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))],
        initializer=[numpy_helper.from_array(out, "answer"), numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"names": repr(dict(enumerate(CLASSES))), "stride": "32", "imgsz": repr([SIZE, SIZE]), "task": "detect",
            "batch": "1", "classes": json.dumps(CLASSES), "input_size": str(SIZE)}
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    """4 test images with LABELS; 2 val images whose only box is where the model never looks."""
    root = tmp_path_factory.mktemp("known-boxes")
    for split, n, labels in (("test", 4, LABELS), ("val", 2, [(0, 0.85, 0.85, 0.1, 0.1)])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (SIZE, SIZE), (90 + 20 * i, 90, 90)).save(root / "images" / split / f"{split}{i}.png")
            lines = "".join(f"{c} {cx} {cy} {w} {h}\n" for c, cx, cy, w, h in labels)
            (root / "labels" / split / f"{split}{i}.txt").write_text(lines)
    cfg = {"path": str(root), "train": "images/test", "val": "images/val", "test": "images/test",
           "names": dict(enumerate(CLASSES))}
    (root / "data.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / "data.yaml"


def _ap(ev) -> dict[str, tuple[float, float]]:
    return {c.name: (c.ap50, c.ap50_95) for c in ev.per_class}


def test_predictions_equal_to_labels_score_perfect(data_yaml, tmp_path):
    onnx = constant_model(tmp_path / "exact.onnx", [(c, _pixels(*b)) for c, *b in LABELS])
    ev = evaluate_model(onnx, data_yaml, "test")
    assert (ev.split, ev.images, ev.instances, ev.imgsz) == ("test", 4, 12, SIZE)
    assert ev.map50 == pytest.approx(PERFECT, abs=1e-6) and ev.map50_95 == pytest.approx(PERFECT, abs=1e-6)
    assert ev.precision == pytest.approx(1.0, abs=1e-3) and ev.recall == pytest.approx(1.0, abs=1e-3)
    assert _ap(ev) == {name: pytest.approx((PERFECT, PERFECT), abs=1e-6) for name in CLASSES}


def test_missing_class_and_shifted_box_give_the_known_per_class_ap(data_yaml, tmp_path):
    c0, c1 = _pixels(*LABELS[0][1:]), _pixels(*LABELS[1][1:])
    shifted = [c1[0] + SHIFT, *c1[1:]]
    onnx = constant_model(tmp_path / "partial.onnx", [(0, c0), (1, shifted)])  # class 2: never predicted
    ev = evaluate_model(onnx, data_yaml, "test")
    ap = _ap(ev)
    assert ap["circle"] == pytest.approx((PERFECT, PERFECT), abs=1e-6)
    assert ap["square"] == pytest.approx((PERFECT, PERFECT * 5 / 10), abs=1e-6)
    assert ap["triangle"] == (0.0, 0.0)
    assert ev.map50 == pytest.approx(2 * PERFECT / 3, abs=1e-6)
    assert ev.map50_95 == pytest.approx((PERFECT + PERFECT / 2) / 3, abs=1e-6)
    assert ev.recall == pytest.approx(2 / 3, abs=1e-3)  # mean over classes at the best-F1 confidence


def test_the_requested_split_is_the_one_evaluated(data_yaml, tmp_path):
    onnx = constant_model(tmp_path / "exact.onnx", [(c, _pixels(*b)) for c, *b in LABELS])
    ev = evaluate_model(onnx, data_yaml, "val")  # val's only box is where the model never answers
    assert (ev.split, ev.images, ev.instances) == ("val", 2, 2)
    assert ev.map50 == 0.0 and _ap(ev)["circle"] == (0.0, 0.0)


def test_model_classes_must_match_the_data(data_yaml, tmp_path):
    import onnx

    path = constant_model(tmp_path / "other.onnx", [])
    m = onnx.load(str(path))
    next(p for p in m.metadata_props if p.key == "classes").value = json.dumps(["a", "b", "c"])
    onnx.save(m, str(path))
    with pytest.raises(ValidationError, match="differ from the data"):
        evaluate_model(path, data_yaml, "test")

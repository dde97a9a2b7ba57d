"""Serving pre/post-processing as pure functions, checked against ultralytics' own implementation."""

from __future__ import annotations

import io
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from serving_helpers import constant_model as _constant_model
from serving_helpers import det_rows, jpeg_bytes
from visionloop.serving import postprocess, preprocess
from visionloop.serving.capture import CapturePolicy, capture_reason, parse_range
from visionloop.serving.errors import ApiError
from visionloop.serving.runtime import OnnxModel, PredictParams, read_info
from visionloop.serving.sources import parse_spec


def test_serving_imports_neither_torch_nor_ultralytics():
    code = ("import sys, visionloop.serving.app, visionloop.cli.serve, visionloop.cli.inbox; "
            "import visionloop.registry, mlflow.artifacts; from mlflow import MlflowClient; "  # registry refs

            "bad = [m for m in ('torch', 'ultralytics', 'torchvision', 'visionloop.training') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("stride", [None, 32])  # static ONNX input; dynamic input (minimum rectangle)
@pytest.mark.parametrize("shape", [(640, 640), (480, 640), (131, 237), (1, 1), (1080, 1920), (3, 400)])
def test_letterbox_matches_ultralytics(shape, stride):
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours, lb = preprocess.letterbox(img, (160, 160), stride)
    theirs = LetterBox((160, 160), auto=stride is not None, stride=32)(image=img)
    assert ours.shape == theirs.shape
    assert ours.shape == (160, 160, 3) or (stride and ours.shape[0] % 32 == 0 and ours.shape[1] % 32 == 0)
    assert np.array_equal(ours, theirs)
    assert (lb.orig_w, lb.orig_h) == (shape[1], shape[0])


@pytest.mark.parametrize("src,dst", [((640, 640), (160, 160)), ((333, 500), (106, 160)), ((100, 37), (160, 59)),
                                     ((1, 1), (160, 160))])
def test_numpy_resize_fallback_within_one_level_of_opencv(src, dst):
    import cv2

    img = np.random.default_rng(1).integers(0, 256, (*src, 3), dtype=np.uint8)
    ours = preprocess.resize_bilinear(img, dst[1], dst[0], use_cv2=False)
    ref = cv2.resize(img, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref).max() <= 1


def test_scale_boxes_matches_ultralytics():
    import torch
    from ultralytics.utils import ops

    img = np.zeros((131, 237, 3), np.uint8)
    _, lb = preprocess.letterbox(img, (160, 160))
    boxes = np.array([[10, 40, 100, 90, 0.5, 1], [0, 0, 160, 160, 0.9, 0], [150, 100, 170, 130, 0.3, 2]], np.float32)
    ours = postprocess.scale_boxes(boxes, lb)
    ref = ops.scale_boxes((160, 160), torch.tensor(boxes[:, :4]), img.shape).numpy()
    np.testing.assert_allclose(ours[:, :4], ref, atol=1e-4)
    assert ours[:, [0, 2]].max() <= 237 and ours[:, [1, 3]].max() <= 131 and ours[:, :4].min() >= 0


def test_yolo_head_matches_ultralytics_nms():
    import torch
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.default_rng(3)
    n, nc = 400, 3
    xy = rng.uniform(10, 150, (2, n))
    wh = rng.uniform(5, 60, (2, n))
    scores = rng.uniform(0, 1, (nc, n)) ** 3
    pred = np.concatenate([xy, wh, scores]).astype(np.float32)  # (4 + nc, N)
    for conf, iou, max_det in [(0.001, 0.7, 300), (0.25, 0.45, 300), (0.05, 0.5, 7)]:
        ours = postprocess.decode_yolo_head(pred, conf, iou, max_det)
        ref = non_max_suppression(torch.from_numpy(pred[None]), conf, iou, max_det=max_det)[0].numpy()
        assert len(ours) == len(ref) > 0
        order_o, order_r = np.lexsort((ours[:, 0], -ours[:, 4])), np.lexsort((ref[:, 0], -ref[:, 4]))
        np.testing.assert_allclose(ours[order_o], ref[order_r], atol=1e-4)


def test_nms_is_class_aware_and_respects_max_det():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert postprocess.nms(boxes, scores, 0.5).tolist() == [0, 3]  # agnostic: overlapping boxes suppressed
    pred = np.zeros((4 + 2, 4), np.float32)
    pred[:4] = np.array([[5, 5, 10, 10], [5.5, 5.5, 9, 9], [5, 5, 10, 10], [55, 55, 10, 10]], np.float32).T
    pred[4, [0, 1, 3]] = [0.9, 0.8, 0.6]  # class 0
    pred[5, 2] = 0.7  # class 1 on the same place as box 0
    dets = postprocess.decode_yolo_head(pred, 0.1, 0.5, 300)
    assert sorted(dets[:, 4].tolist()) == pytest.approx([0.6, 0.7, 0.9])  # the class-1 box survives beside class 0
    assert len(postprocess.decode_yolo_head(pred, 0.1, 0.5, 2)) == 2
    assert len(postprocess.decode_yolo_head(pred, 0.95, 0.5, 300)) == 0


def test_end2end_decode_filters_by_confidence_and_max_det():
    pred = np.array([[0, 0, 10, 10, 0.9, 2], [5, 5, 20, 20, 0.2, 1], [1, 1, 5, 5, 0.5, 0]], np.float32)
    out = postprocess.decode_end2end(pred, 0.3, 300)
    assert out[:, 4].tolist() == pytest.approx([0.9, 0.5]) and out[:, 5].tolist() == [2, 0]
    assert len(postprocess.decode_end2end(pred, 0.3, 1)) == 1


def test_end2end_onnx_model_scales_to_original_pixels(tmp_path):
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [16, 24, 48, 40, 0.9, 1]  # letterbox coords of a 64x64 input
    rows[0, 1] = [0, 0, 8, 8, 0.1, 0]
    path = _constant_model(tmp_path / "e2e.onnx", rows, {"names": "{0: 'cat', 1: 'dog'}", "imgsz": "[64, 64]",
                                                         "task": "detect", "end2end": "True", "stride": "32"})
    model = OnnxModel(path)
    model.warmup()
    assert model.info.end2end and model.info.classes == ["cat", "dog"]
    img = preprocess.decode_array(np.zeros((64, 128, 3), np.uint8))  # scaled by 0.5, padded 16 px top/bottom
    res = model.predict(img, PredictParams(conf=0.25))
    assert len(res.detections) == 1 and res.detections.cls.tolist() == [1]
    np.testing.assert_allclose(det_rows(res.detections)[0], [32, 16, 96, 48, 0.9, 1], atol=1e-4)


def test_classification_onnx_model_returns_top_k(tmp_path):
    probs = np.array([[0.1, 0.6, 0.05, 0.25]], np.float32)
    path = _constant_model(tmp_path / "cls.onnx", probs, {"names": "{0: 'a', 1: 'b', 2: 'c', 3: 'd'}",
                                                          "imgsz": "[64, 64]", "task": "classify"})
    model = OnnxModel(path)
    model.warmup()
    res = model.predict(preprocess.decode_array(np.zeros((50, 90, 3), np.uint8)), PredictParams(top_k=3))
    assert res.detections is None
    assert [c for c, _ in res.classes] == [1, 3, 0]
    assert res.classes[0][1] == pytest.approx(0.6)


def test_metadata_without_names_falls_back_to_graph(tmp_path):
    path = _constant_model(tmp_path / "plain.onnx", np.zeros((1, 7, 84), np.float32), {})
    info = read_info(OnnxModel(path).session)
    assert info.task == "detect" and info.imgsz == (64, 64) and info.classes == ["class0", "class1", "class2"]


def test_decode_applies_exif_orientation_and_refuses_bad_images(monkeypatch):
    from PIL import ImageFile

    # importing ultralytics (other tests) flips this and patches Image.open process-wide (to fetch a
    # HEIF plugin on unknown files); the server process never imports ultralytics
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    if "ultralytics.utils.patches" in sys.modules:
        monkeypatch.setattr(sys.modules["ultralytics.utils.patches"], "_pil_plugins_registered", True)
    arr = np.zeros((40, 100, 3), np.uint8)
    arr[:, :50] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img = preprocess.decode_image(jpeg_bytes(arr, exif=exif.tobytes()))
    assert (img.width, img.height) == (40, 100)
    good = jpeg_bytes(arr)
    cases = {400: [b"", good[: len(good) // 2], b"hello, I am text"], 415: []}
    gif = io.BytesIO()
    Image.fromarray(arr).save(gif, "GIF")
    cases[415].append(gif.getvalue())
    for status, blobs in cases.items():
        for blob in blobs:
            with pytest.raises(ApiError) as exc:
                preprocess.decode_image(blob)
            assert exc.value.status == status
    with pytest.raises(ApiError) as exc:
        preprocess.decode_image(good, max_pixels=1000)
    assert exc.value.status == 413


def test_capture_reasons():
    rng = random.Random(0)
    low = CapturePolicy(mode="low-confidence", low=0.25, high=0.6)
    assert capture_reason(low, np.array([]), rng) == "no-detection"
    assert capture_reason(low, np.array([0.9, 0.3]), rng) == "low-confidence"
    assert capture_reason(low, np.array([0.9, 0.1]), rng) is None
    assert capture_reason(CapturePolicy(mode="all"), np.array([0.9]), rng) == "all"
    assert capture_reason(CapturePolicy(mode="none"), np.array([]), rng) is None
    sampled = [capture_reason(CapturePolicy(mode="all", rate=0.3), np.array([0.9]), rng) for _ in range(1000)]
    assert 200 < sum(s is not None for s in sampled) < 400
    assert parse_range("0.2,0.5") == (0.2, 0.5)
    with pytest.raises(ValueError):
        parse_range("0.7,0.2")


def test_model_spec_parsing(tmp_path):
    f = tmp_path / "best.onnx"
    f.write_bytes(b"x")
    assert (parse_spec(str(f)).name, parse_spec(str(f)).kind) == ("best", "file")
    assert parse_spec(f"shapes={f}").name == "shapes"
    s = parse_spec("rps@champion")
    assert (s.kind, s.registry_name, s.alias) == ("registry", "rps", "champion")
    assert parse_spec("rps").ref == "rps@champion"
    assert parse_spec("big=rps/5").name == "big" and parse_spec("rps/5").alias is None
    from visionloop.errors import ValidationError

    with pytest.raises(ValidationError):
        parse_spec("not a model!")


def test_inference_pool_refuses_with_503_when_full():
    import asyncio
    import threading

    from visionloop.serving.manager import InferencePool
    from visionloop.serving.metrics import Metrics

    metrics = Metrics()
    pool = InferencePool(workers=1, limit=2, metrics=metrics)
    gate = threading.Event()

    async def scenario():
        running = [asyncio.ensure_future(pool.run(gate.wait, 10)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as exc:
            await pool.run(lambda: None)
        gate.set()
        done = await asyncio.gather(*running)
        return exc.value, done, await pool.run(lambda: 42)

    err, done, after = asyncio.run(scenario())
    pool.shutdown()
    assert err.status == 503 and err.headers["Retry-After"] and done == [True, True] and after == 42
    assert metrics.rejected.labels("queue_full")._value.get() == 1


def test_annotate_draws_boxes_and_top_k():
    from visionloop.predictions import Detections
    from visionloop.serving.annotate import annotate

    rgb = np.full((120, 200, 3), 255, np.uint8)
    dets = Detections.from_rows(np.array([[20, 30, 120, 100, 0.87, 1]], np.float32))
    boxed = np.asarray(Image.open(io.BytesIO(annotate(rgb, dets, ["a", "b"]))).convert("RGB"), dtype=int)
    assert boxed.shape == rgb.shape
    assert np.abs(boxed[65, 20] - 255).max() > 60  # the box's left edge is drawn
    assert np.abs(boxed[110, 180] - 255).max() < 30  # far from the box: still white (JPEG noise aside)
    labeled = np.asarray(Image.open(io.BytesIO(annotate(rgb, None, ["a", "b"], top=[(1, 0.9)]))).convert("RGB"))
    assert (np.abs(labeled[:40, :80].astype(int) - 255).max(axis=2) > 60).sum() > 20  # a label was written


def test_decode_gives_the_pixels_ultralytics_reads_with_opencv():
    """ultralytics reads with cv2 (BGR, EXIF applied); our Pillow decode must give the same RGB pixels."""
    import cv2

    from conftest import RPS

    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    samples = [jpeg_bytes(arr), jpeg_bytes(arr, exif=exif.tobytes())]
    samples += [p.read_bytes() for p in sorted((RPS / "test" / "images").iterdir())[:3]]
    png = io.BytesIO()
    Image.fromarray(np.dstack([arr, np.full(arr.shape[:2], 128, np.uint8)])).save(png, "PNG")  # RGBA
    samples.append(png.getvalue())
    for data in samples:
        ours = preprocess.decode_image(data).rgb
        ref = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert ours.shape == ref.shape
        assert np.array_equal(ours, ref)


def test_every_error_leaves_as_one_json_shape():
    """install_handlers: domain, API, validation, routing errors and bugs all become {"error": {code, message}}."""
    from fastapi import FastAPI, Query
    from starlette.testclient import TestClient

    from visionloop.errors import NotFoundError, VisionloopError
    from visionloop.serving.errors import install_handlers, overloaded

    app = FastAPI()
    install_handlers(app)

    @app.get("/raise/{what}")
    async def boom(what: str, n: int = Query(1, ge=1)):
        raise {"missing": NotFoundError("no such thing"), "conflict": VisionloopError("busy elsewhere"),
               "busy": overloaded("queue full"), "bug": RuntimeError("secret detail")}[what]

    with TestClient(app, raise_server_exceptions=False) as c:
        cases = {"/raise/missing": (404, "not_found"), "/raise/conflict": (409, "conflict"),
                 "/raise/busy": (503, "overloaded"), "/raise/bug": (500, "internal"),
                 "/raise/busy?n=0": (422, "bad_parameter"), "/nowhere": (404, "not_found")}
        for path, (status, code) in cases.items():
            r = c.get(path)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (path, r.text)
            assert set(r.json()["error"]) == {"code", "message"}
        assert c.get("/raise/busy").headers["retry-after"] == "1"
        assert "secret detail" not in c.get("/raise/bug").text
        assert "n:" in c.get("/raise/busy?n=0").json()["error"]["message"]
        assert c.post("/raise/busy").json()["error"]["code"] == "method_not_allowed"


def test_encode_keeps_the_wire_json():
    """DESIGN.md "HTTP API": pixels to 2 decimals, confidences to 5, nested box, no empty fields."""
    import json
    import time
    from types import SimpleNamespace

    from visionloop.predictions import Detections
    from visionloop.serving.manager import LoadedModel
    from visionloop.serving.pipeline import encode
    from visionloop.serving.runtime import RawPrediction

    info = SimpleNamespace(classes=["a", "b"], task="detect")
    loaded = LoadedModel("m", "5", SimpleNamespace(info=info), None, "now")
    rows = np.array([[1.23456, 2.0, 30.5049, 40.0, 0.123456789, 1], [0, 0, 1, 1, 0.5, 7]], np.float32)
    raw = RawPrediction(64, 48, Detections.from_rows(rows), None,
                        {"preprocess": 1.0, "inference": 2.0, "postprocess": 0.5})
    doc = json.loads(encode(loaded, raw, 0.25, time.perf_counter()).model_dump_json(exclude_none=True))
    assert set(doc) == {"model", "version", "task", "image", "detections", "timing_ms"}
    assert (doc["model"], doc["version"], doc["image"]) == ("m", "5", {"width": 64, "height": 48})
    assert doc["detections"][0] == {"class_id": 1, "class_name": "b", "confidence": 0.12346,
                                    "box": {"x1": 1.23, "y1": 2.0, "x2": 30.5, "y2": 40.0}}
    assert doc["detections"][1]["class_name"] == "7"  # an id the model has no name for
    assert set(doc["timing_ms"]) == {"decode", "preprocess", "inference", "postprocess", "total"}

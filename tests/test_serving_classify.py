"""Classification over HTTP: top-k for multipart, base64, batch and the KServe v1 ``:predict``
instances form; bad input stays 4xx; the capture policy's low top-1 and small top-1/top-2 margin."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving_helpers import Server, constant_model, jpeg_bytes

NAMES = "{0: 'paper', 1: 'rock', 2: 'scissors'}"
META = {"names": NAMES, "imgsz": "[64, 64]", "task": "classify"}
PROBS = {"sure": [0.1, 0.8, 0.1], "close": [0.45, 0.40, 0.15], "low": [0.35, 0.33, 0.32]}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cls-home")


@pytest.fixture(scope="module")
def server(home, tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("cls-models")
    models = [f"{n}={constant_model(tmp / f'{n}.onnx', np.array([p], np.float32), META)}" for n, p in PROBS.items()]
    srv = Server([*models, f"det={tiny_model.onnx}"], tmp, "--capture", "low-confidence", "--capture-range",
                 "0.25,0.4", "--capture-margin", "0.1", env={"VISIONLOOP_HOME": str(home)})
    yield srv
    srv.stop()


def _jpeg(seed: int = 0) -> bytes:
    return jpeg_bytes(np.random.default_rng(seed).integers(0, 255, (48, 80, 3), dtype=np.uint8))


def _top(pred: dict) -> list[tuple[str, float]]:
    return [(c["class_name"], c["confidence"]) for c in pred["classes"]]


def test_top_k_for_multipart_base64_batch_and_instances(server):
    want = [("rock", 0.8), ("paper", 0.1), ("scissors", 0.1)]
    img = _jpeg()
    b64 = base64.b64encode(img).decode()
    multipart = server.client.post("/v1/models/sure/predict", files={"file": ("a.jpg", img, "image/jpeg")})
    assert multipart.status_code == 200 and _top(multipart.json()) == want
    assert multipart.json()["task"] == "classify" and "detections" not in multipart.json()
    two = server.client.post("/v1/models/sure/predict", params={"top_k": 2}, json={"image": b64})
    assert two.status_code == 200 and [n for n, _ in _top(two.json())] == ["rock", "paper"]
    batch = server.client.post("/v1/models/sure/predict/batch", json={"images": [b64, b64]})
    assert batch.status_code == 200 and [_top(i["prediction"]) for i in batch.json()["results"]] == [want, want]

    # KServe v1 / TF-Serving, and Cloud ML's image_bytes wrapper, in one request
    r = server.client.post("/v1/models/sure:predict", params={"top_k": 1},
                           json={"instances": [{"b64": b64}, {"image_bytes": {"b64": b64}}]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2 and all(_top(p) == [("rock", 0.8)] for p in preds)
    assert all(p["model"] == "sure" and p["image"] == {"width": 80, "height": 48} for p in preds)
    det = server.client.post("/v1/models/det:predict", params={"conf": 0.001}, json={"instances": [{"b64": b64}]})
    assert det.status_code == 200 and det.json()["predictions"][0]["task"] == "detect"
    assert "detections" in det.json()["predictions"][0]
    assert server.metric("visionloop_requests_total", model="sure", endpoint="instances", status="200") == 1


def test_instances_bad_input_is_4xx_and_names_the_instance(server):
    good = base64.b64encode(_jpeg()).decode()
    cases = [
        ({"instances": []}, 422, "bad_parameter"),
        ({"images": [good]}, 422, "bad_parameter"),
        ({"instances": [{"b64": good}, {"url": "x"}]}, 422, "bad_parameter"),
        ({"instances": [{"b64": good}, {"b64": "!!not base64"}]}, 400, "bad_base64"),
        ({"instances": [{"b64": base64.b64encode(b"plain text").decode()}]}, 400, "bad_image"),
    ]
    for body, status, code in cases:
        r = server.client.post("/v1/models/sure:predict", json=body)
        assert r.status_code == status and r.json()["error"]["code"] == code, (body, r.text)
    r = server.client.post("/v1/models/sure:predict", json={"instances": [{"b64": good}, {"b64": "!!"}]})
    assert "instances[1]" in r.json()["error"]["message"]
    assert server.client.post("/v1/models/ghost:predict", json={"instances": [{"b64": good}]}).status_code == 404
    r = server.client.post("/v1/models/sure:predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_json"
    big = server.client.post("/v1/models/sure:predict", content=b"x" * (21 * 1024 * 1024),
                             headers={"content-type": "application/json"})
    assert big.status_code == 413


def test_capture_low_top1_and_small_margin(server, home):
    from visionloop.feedback.inbox import list_captures
    from visionloop.store import Store

    for i, name in enumerate(PROBS):
        r = server.client.post(f"/v1/models/{name}/predict", files={"file": ("a.jpg", _jpeg(i), "image/jpeg")})
        assert r.status_code == 200
    store = Store(str(home / "store"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (list_captures(store, "close") and list_captures(store, "low")):
        time.sleep(0.2)
    close, low = list_captures(store, "close"), list_captures(store, "low")
    assert [r.reason for r in close] == ["low-margin"] and [r.reason for r in low] == ["low-confidence"]
    assert [c.class_name for c in close[0].top] == ["paper", "rock", "scissors"] and close[0].detections == []
    assert close[0].classes == ["paper", "rock", "scissors"]
    assert list_captures(store, "sure") == []  # a confident answer with a wide margin is not worth a label
    with Image.open(io.BytesIO(store.get_blob(low[0].image_sha256))) as im:
        assert im.size == (80, 48)

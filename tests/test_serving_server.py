"""The real `visionloop serve` process: parity with ultralytics, bad input, metrics, captures, readiness."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from serving_helpers import TOKEN, Server, as_rows, assert_parity, constant_model, det_rows

PARITY_CONF = 0.001  # the tiny model is barely trained: its confidences are low


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve-home")


@pytest.fixture(scope="module")
def server(tiny_model, home, tmp_path_factory):
    srv = Server([f"shapes={tiny_model.onnx}"], tmp_path_factory.mktemp("logs"),
                 "--capture", "low-confidence", "--capture-range", "0.0,1.0", "--capture-max", "5",
                 "--capture-full", "drop-oldest",
                 env={"VISIONLOOP_HOME": str(home)})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def odd_image(tiny_model, tmp_path_factory) -> Path:
    """A non-square JPEG at another size than imgsz (237x131), so letterbox scaling is exercised."""
    src = Image.open(tiny_model.test_images[0]).convert("RGB")
    path = tmp_path_factory.mktemp("odd") / "odd.jpg"
    src.resize((237, 131), Image.Resampling.BILINEAR).save(path, quality=92)
    return path


def _reference(tiny_model, path: Path) -> np.ndarray:
    from ultralytics import YOLO

    r = YOLO(str(tiny_model.onnx), task="detect").predict(str(path), conf=PARITY_CONF, imgsz=tiny_model.imgsz,
                                                          verbose=False, device="cpu")[0]
    return np.concatenate([r.boxes.xyxy.numpy(), r.boxes.conf.numpy()[:, None], r.boxes.cls.numpy()[:, None]], 1)


def test_parity_with_ultralytics_multipart_and_base64(server, tiny_model, odd_image):
    paths = [*tiny_model.test_images[:3], odd_image]
    for path in paths:
        data = path.read_bytes()
        ref = _reference(tiny_model, path)
        w, h = Image.open(path).size
        via_file = server.client.post("/v1/models/shapes/predict", params={"conf": PARITY_CONF},
                                      files={"file": (path.name, data, "image/jpeg")})
        via_b64 = server.client.post("/v1/models/shapes/predict", params={"conf": PARITY_CONF},
                                     json={"image": base64.b64encode(data).decode()})
        for resp in (via_file, via_b64):
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["model"] == "shapes" and body["version"].startswith("file:")
            assert body["image"] == {"width": w, "height": h}
            assert set(body["timing_ms"]) >= {"decode", "inference", "total"}
            assert_parity(as_rows(body["detections"]), ref)
            rows = as_rows(body["detections"])
            assert rows[:, [0, 2]].max() <= w and rows[:, [1, 3]].max() <= h


def test_detect_alias_batch_compare_and_annotated(server, tiny_model):
    data = tiny_model.test_images[0].read_bytes()
    one = server.client.post("/v1/models/shapes/predict", params={"conf": PARITY_CONF}, files={"file": ("a.jpg", data)}).json()
    det = server.client.post("/detect", params={"conf": PARITY_CONF}, files={"file": ("a.jpg", data)}).json()
    assert det["detections"] == one["detections"] and det["model"] == "shapes"
    batch = server.client.post("/v1/models/shapes/predict/batch", params={"conf": PARITY_CONF},
                               files=[("file", ("a.jpg", data)), ("file", ("bad.jpg", b"not an image"))]).json()
    assert [r["filename"] for r in batch["results"]] == ["a.jpg", "bad.jpg"]
    assert batch["results"][0]["prediction"]["detections"] == one["detections"]
    assert batch["results"][1]["error"]["code"] == "bad_image"
    cmp = server.client.post("/v1/compare", params={"conf": PARITY_CONF}, files={"file": ("a.jpg", data)}).json()
    assert [r["model"] for r in cmp["results"]] == ["shapes"]
    assert cmp["results"][0]["prediction"]["detections"] == one["detections"]
    ann = server.client.post("/v1/models/shapes/predict/annotated", params={"conf": PARITY_CONF}, files={"file": ("a.jpg", data)})
    assert ann.status_code == 200 and ann.headers["content-type"] == "image/jpeg"
    assert ann.headers["x-model-version"] == one["version"]
    assert int(ann.headers["x-detections"]) == len(one["detections"]) > 0
    drawn = np.asarray(Image.open(io.BytesIO(ann.content)).convert("RGB"), dtype=int)
    plain = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)
    assert drawn.shape == plain.shape and np.abs(drawn - plain).max() > 100  # boxes were drawn


def test_models_health_docs(server, tiny_model):
    assert server.client.get("/health").json() == {"status": "ok"}
    assert server.client.get("/ready").json()["ready"] is True
    models = server.client.get("/v1/models").json()
    m = models["models"][0]
    assert models["default"] == "shapes" and m["state"] == "ready" and m["classes"] == tiny_model.classes
    assert m["input_size"] == [160, 160] and m["task"] == "detect" and m["last_error"] is None
    spec = server.client.get("/openapi.json").json()
    for schema in ("Prediction", "Detection", "PixelBox", "ModelsResponse", "ErrorResponse", "ReloadResponse",
                   "FeedbackResponse", "BatchResponse", "CompareResponse"):
        assert schema in spec["components"]["schemas"]
    body = lambda path: spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]  # noqa: E731
    assert {"version", "path"} <= set(body("/v1/models/{name}/reload")["properties"])
    assert {"image", "model", "note"} <= set(body("/v1/feedback")["properties"])
    assert "multipart/form-data" in spec["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert server.client.get("/docs").status_code == 200


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (no real pixel data): a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_input_corpus_gets_4xx_and_server_stays_healthy(server, tiny_model):
    good = tiny_model.test_images[0].read_bytes()
    url = "/v1/models/shapes/predict"
    c = server.client
    cases = {
        "empty body": (c.post(url, content=b"", headers={"content-type": "image/jpeg"}), 400),
        "empty multipart file": (c.post(url, files={"file": ("e.jpg", b"")}), 400),
        "truncated jpeg": (c.post(url, files={"file": ("t.jpg", good[: len(good) // 2])}), 400),
        "text named .jpg": (c.post(url, files={"file": ("x.jpg", b"just some text\n" * 20, "image/jpeg")}), 400),
        "png bomb header": (c.post(url, files={"file": ("bomb.png", _png_header(30000, 30000))}), 413),
        "invalid base64": (c.post(url, json={"image": "%%% not base64 %%%"}), 400),
        "malformed json": (c.post(url, content=b'{"image": ', headers={"content-type": "application/json"}), 400),
        "json without image": (c.post(url, json={"picture": "x"}), 422),
        "conf=-1": (c.post(url, params={"conf": -1}, files={"file": ("a.jpg", good)}), 422),
        "conf=2": (c.post(url, params={"conf": 2}, files={"file": ("a.jpg", good)}), 422),
        "max_det=0": (c.post(url, params={"max_det": 0}, files={"file": ("a.jpg", good)}), 422),
        "conf not a number": (c.post(url, params={"conf": "high"}, files={"file": ("a.jpg", good)}), 422),
        "unknown model": (c.post("/v1/models/nope/predict", files={"file": ("a.jpg", good)}), 404),
        "wrong content type": (c.post(url, content=good, headers={"content-type": "text/plain"}), 415),
        "multipart without file": (c.post(url, data={"other": "x"}, files={"x": ("a", b"1")}), 422),
        "25 MB body": (c.post(url, content=b"\xff" * (25 * 1024 * 1024), headers={"content-type": "image/jpeg"}), 413),
        "25 MB chunked, no length": (c.post(url, content=(b"\xff" * (1 << 20) for _ in range(25)),
                                            headers={"content-type": "image/jpeg"}), 413),
        "unknown route": (c.get("/v2/nothing"), 404),
        "get on predict": (c.get(url), 405),
    }
    for name, (resp, status) in cases.items():
        assert resp.status_code == status, f"{name}: {resp.status_code} {resp.text[:200]}"
        err = resp.json()["error"]
        assert err["code"] and err["message"], name
    # a 1x1 image is a valid image: 200 (a model may see nothing in it), never an error
    tiny = c.post(url, files={"file": ("1x1.png", _png_bytes(np.full((1, 1, 3), 200, np.uint8)))})
    assert tiny.status_code == 200 and tiny.json()["image"] == {"width": 1, "height": 1}
    assert c.get("/health").status_code == 200
    assert c.post(url, files={"file": ("a.jpg", good)}).status_code == 200
    assert server.proc.poll() is None
    assert "Traceback" not in server.log.read_text()


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_metrics_count_what_was_sent(server, tiny_model):
    data = tiny_model.test_images[1].read_bytes()
    before_ok = server.metric("visionloop_requests_total", model="shapes", endpoint="predict", status="200")
    before_404 = server.metric("visionloop_requests_total", endpoint="predict", status="404")
    before_inf = server.metric("visionloop_stage_seconds_count", model="shapes", stage="inference")
    before_det = server.metric("visionloop_detections_total", model="shapes")
    n_det = 0
    for _ in range(5):
        r = server.client.post("/v1/models/shapes/predict", params={"conf": PARITY_CONF}, files={"file": ("a.jpg", data)})
        n_det += len(r.json()["detections"])
    for _ in range(2):
        server.client.post("/v1/models/ghost/predict", files={"file": ("a.jpg", data)})
    assert server.metric("visionloop_requests_total", model="shapes", endpoint="predict", status="200") - before_ok == 5
    assert server.metric("visionloop_requests_total", endpoint="predict", status="404") - before_404 == 2
    assert server.metric("visionloop_stage_seconds_count", model="shapes", stage="inference") - before_inf == 5
    assert server.metric("visionloop_detections_total", model="shapes") - before_det == n_det > 0
    assert server.metric("visionloop_confidence_count", model="shapes") >= n_det
    assert server.metric("visionloop_model_info", model="shapes", task="detect") == 1


def test_captures_land_in_the_inbox_and_feedback_is_flagged(server, tiny_model, home):
    data = tiny_model.test_images[2].read_bytes()
    for _ in range(3):
        assert server.client.post("/v1/models/shapes/predict", params={"conf": PARITY_CONF},
                                  files={"file": ("a.jpg", data)}).status_code == 200
    fb = server.client.post("/v1/feedback", json={"model": "shapes", "image": base64.b64encode(data).decode(),
                                                  "note": "missed the circle"})
    assert fb.status_code == 202, fb.text
    rec_id = fb.json()["id"]
    assert server.client.post("/v1/feedback", json={"image": "!!"}).status_code == 400
    assert server.client.post("/v1/feedback", json={"model": "ghost", "image": "aGk="}).status_code == 404

    from visionloop.feedback.inbox import count_by_state, list_captures
    from visionloop.store import Store

    store = Store(str(home / "store"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = list_captures(store, "shapes")
        if any(r.id == rec_id for r in records) and len(records) >= 5:
            break
        time.sleep(0.2)
    flagged = [r for r in records if r.id == rec_id]
    assert flagged and flagged[0].reason == "flagged" and flagged[0].note == "missed the circle"
    auto = [r for r in records if r.reason != "flagged"]
    assert len(auto) == 4  # --capture-max 5 counts the flag too; drop-oldest made room for the newest
    assert all(r.reason == "low-confidence" and r.detections and r.version.startswith("file:") for r in auto)
    assert all(store.has_blob(r.image_sha256) and r.state == "pending" for r in auto)
    assert store.get_blob(flagged[0].image_sha256) == data  # the exact bytes that were sent
    discarded = server.metric("visionloop_captures_discarded_total", model="shapes")
    assert discarded >= 1 and server.metric("visionloop_captures_waiting", model="shapes") == 5
    counts = count_by_state(store, "shapes")  # nothing lost: discarded ones are archived
    assert counts["pending"] == 5 and counts["discarded"] == discarded
    assert sum(counts.values()) == server.metric("visionloop_captures_total", model="shapes")
    listing = run_cli("data", "inbox", "--model", "shapes", env={"VISIONLOOP_HOME": str(home), "COLUMNS": "250"})
    out, code = listing.stdout, listing.returncode
    assert code == 0 and rec_id in out and "flagged" in out and "low-confidence" in out and "discarded" in out


def test_failing_store_never_fails_predictions(tiny_model, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store directory should be")
    srv = Server([str(tiny_model.onnx)], tmp_path, "--capture", "all",
                 env={"VISIONLOOP_HOME": str(tmp_path / "h"), "VISIONLOOP_STORE_URL": str(blocker / "store")})
    try:
        data = tiny_model.test_images[0].read_bytes()
        for _ in range(4):
            r = srv.client.post(f"/v1/models/{tiny_model.onnx.stem}/predict", files={"file": ("a.jpg", data)})
            assert r.status_code == 200
        deadline = time.monotonic() + 15
        while srv.metric("visionloop_captures_dropped_total", why="store_error") < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.metric("visionloop_captures_dropped_total", why="store_error") == 4
        deadline = time.monotonic() + 15  # the prediction log's batch (every 5 s) fails too: counted, not raised
        while srv.metric("visionloop_predlog_dropped_total") < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.metric("visionloop_predlog_dropped_total", why="write_failed") == 4
        assert srv.client.get("/health").status_code == 200
    finally:
        srv.stop()


def test_ready_is_503_until_models_are_loaded(tiny_model, vl_home, monkeypatch):
    """A model source that is slow to resolve (a registry or store answering late): the app answers
    /health at once, /ready and predict say 503 + Retry-After until the model is loaded, then 200."""
    import threading

    from starlette.testclient import TestClient

    from visionloop.serving import manager
    from visionloop.serving.app import create_app
    from visionloop.serving.config import ServeConfig

    asked, release, real = threading.Event(), threading.Event(), manager.resolve

    def slow_resolve(spec, *args):
        asked.set()
        assert release.wait(60), "the test never released the source"
        return real(spec, *args)

    monkeypatch.setattr(manager, "resolve", slow_resolve)
    name = tiny_model.onnx.stem
    with TestClient(create_app(ServeConfig(models=[str(tiny_model.onnx)]))) as c:
        try:
            assert asked.wait(30), "the loader never asked for the model"
            r = c.get("/ready")
            assert r.status_code == 503 and r.headers["retry-after"] and r.json()["error"]["code"] == "not_ready"
            assert name in r.json()["error"]["message"] and "loading" in r.json()["error"]["message"]
            assert c.get("/health").status_code == 200
            assert c.get("/v1/models").json()["models"][0]["state"] == "loading"
            p = c.post(f"/v1/models/{name}/predict", files={"file": ("a.jpg", tiny_model.test_images[0].read_bytes())})
            assert p.status_code == 503 and "retry-after" in p.headers and p.json()["error"]["code"] == "not_ready"
        finally:
            release.set()
        deadline = time.monotonic() + 60
        while c.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get("/ready").json() == {"ready": True, "models": {name: "ready"}}
        p = c.post(f"/v1/models/{name}/predict", files={"file": ("a.jpg", tiny_model.test_images[0].read_bytes())})
        assert p.status_code == 200 and p.json()["version"].startswith("file:")


def test_cli_refuses_missing_models_and_bad_options_with_one_line(tmp_path, vl_home):
    for args, words in [(["--model", str(tmp_path / "missing.onnx")], "not found"),
                        (["--model", "nothere@champion"], "nothere"),
                        (["--model", "what is this?"], "'what is this?'"),  # the message names the bad value
                        (["--model", str(tmp_path / "m.onnx"), "--capture", "sometimes"], "--capture")]:
        r = run_cli("serve", *args, "--port", "1")
        assert r.returncode != 0 and words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_reload_needs_the_admin_token(server):
    assert server.client.post("/v1/models/shapes/reload").status_code == 401
    assert server.client.post("/v1/models/shapes/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = server.client.post("/v1/models/shapes/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["swapped"] is False  # same file: nothing to swap
    assert server.client.post("/v1/models/nope/reload", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_dynamic_shape_export_matches_ultralytics_rect_inference(tiny_model, odd_image, tmp_path):
    """``export(dynamic=True)``: letterbox to the minimum stride rectangle, as ultralytics does for it."""
    import shutil

    from ultralytics import YOLO

    from visionloop.serving.preprocess import decode_image
    from visionloop.serving.runtime import OnnxModel, PredictParams

    shutil.copy(tiny_model.pt, tmp_path / "dyn.pt")
    onnx = Path(YOLO(str(tmp_path / "dyn.pt")).export(format="onnx", imgsz=160, dynamic=True, simplify=True))
    model = OnnxModel(onnx)
    model.warmup()
    assert model.info.dynamic
    tensor, _ = model.preprocess(decode_image(odd_image.read_bytes()))
    assert tensor.shape == (1, 3, 96, 160)  # 237x131 → 160x88, padded to a multiple of 32, not to 160x160
    for path in (odd_image, tiny_model.test_images[0]):
        res = model.predict(decode_image(path.read_bytes()), PredictParams(conf=PARITY_CONF))
        r = YOLO(str(onnx), task="detect").predict(str(path), conf=PARITY_CONF, imgsz=160, verbose=False)[0]
        ref = np.concatenate([r.boxes.xyxy.numpy(), r.boxes.conf.numpy()[:, None], r.boxes.cls.numpy()[:, None]], 1)
        assert_parity(det_rows(res.detections), ref)


def test_classification_model_serves_top_k(tmp_path):
    probs = np.array([[0.1, 0.6, 0.05, 0.25]], np.float32)
    path = constant_model(tmp_path / "cls.onnx", probs, {"names": "{0: 'rock', 1: 'paper', 2: 'scissors', 3: 'none'}",
                                                         "imgsz": "[64, 64]", "task": "classify"})
    srv = Server([str(path)], tmp_path)
    try:
        img = _png_bytes(np.full((30, 50, 3), 90, np.uint8))
        r = srv.client.post("/v1/models/cls/predict", params={"top_k": 2}, files={"file": ("a.png", img)})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["task"] == "classify" and "detections" not in body
        assert [(c["class_name"], round(c["confidence"], 2)) for c in body["classes"]] == [("paper", 0.6), ("none", 0.25)]
        ann = srv.client.post("/v1/models/cls/predict/annotated", files={"file": ("a.png", img)})
        assert ann.status_code == 200 and ann.content[:2] == b"\xff\xd8"
        assert srv.metric("visionloop_confidence_count", model="cls") == 2
        renamed = constant_model(tmp_path / "cls2.onnx", probs, {"names": "{0: 'a', 1: 'b', 2: 'c', 3: 'd'}",
                                                                 "imgsz": "[64, 64]", "task": "classify"})
        swap = srv.client.post("/v1/models/cls/reload", json={"path": str(renamed)},
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert swap.status_code == 200 and swap.json()["swapped"] and swap.json()["classes_changed"] is True
        again = srv.client.post("/v1/models/cls/predict", files={"file": ("a.png", img)}).json()
        assert again["classes"][0]["class_name"] == "b" and again["version"] == swap.json()["version"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        missing = srv.client.post("/v1/models/cls/reload", json={"path": str(tmp_path / "missing.onnx")}, headers=auth)
        assert missing.status_code == 404 and "not found" in srv.client.get("/v1/models").json()["models"][0]["last_error"]
        detector = constant_model(tmp_path / "det.onnx", np.zeros((1, 300, 6), np.float32),
                                  {"names": "{0: 'a'}", "imgsz": "[64, 64]", "task": "detect", "end2end": "True"})
        refused = srv.client.post("/v1/models/cls/reload", json={"path": str(detector)}, headers=auth)
        assert refused.status_code == 409 and "task changed" in refused.json()["error"]["message"]
        still = srv.client.post("/v1/models/cls/predict", files={"file": ("a.png", img)}).json()
        assert still["task"] == "classify" and still["version"] == swap.json()["version"]
    finally:
        srv.stop()

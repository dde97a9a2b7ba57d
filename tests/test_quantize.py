"""Issue 17, INT8 versions: `visionloop models quantize` and `train --quantize int8` for real.

A module home holds generated shapes (detect and classify) with one trained version each
(yolo11n.yaml at 96 px for 20 epochs, yolo11n-cls.yaml at 32 px for 8: both learn shapes). The
tests quantize them through the CLI, check what was registered (tag, card, no alias, a QDQ
graph a third of the size), serve fp32 and int8 side by side in the real server and compare
their answers, and force the refusal path (a limit no model can meet), which registers nothing.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from visionloop import registry

from conftest import run_cli
from serving_helpers import Server, as_rows, iou
from test_training_pipeline import _env, using_home

DETECT = ["train", "--data", "qshapes@1", "--model", "yolo11n.yaml", "--epochs", "20", "--imgsz", "96",
          "--device", "cpu", "--name", "qdet"]
CLASSIFY = ["train", "--data", "qcls@1", "--epochs", "8", "--imgsz", "32", "--device", "cpu", "--name", "qcls",
            "--quantize", "int8"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from visionloop.datasets import synthetic
    from visionloop.store import open_store

    home = tmp_path_factory.mktemp("quant-home")
    with using_home(home):
        store = open_store()
        synthetic.commit_generated(store, "qshapes", 120, seed=5, size=96)
        synthetic.commit_generated(store, "qcls", 150, seed=3, size=64, task="classify")
    res = run_cli(*DETECT, env=_env(home))
    assert res.returncode == 0, res.stderr
    return home


@pytest.fixture(scope="module")
def quantized(home):
    """`models quantize qdet/1 --json`: the report, and the version it registered."""
    res = run_cli("models", "quantize", "qdet/1", "--json", env=_env(home))
    assert res.returncode == 0, res.stderr
    assert "calibrating on" in res.stderr  # progress on stderr, one JSON document on stdout
    return json.loads(res.stdout)


def test_int8_detector_is_a_sibling_version_within_the_gate(home, quantized):
    r = quantized
    assert r["source"] == "qdet/1" and r["version"] == "qdet/2" and r["metric"] == "map50_95"
    assert r["fp32"] > 0.05, r  # a model that learned: the comparison compares something
    assert r["drop"] == pytest.approx(r["fp32"] - r["int8"], abs=1e-5) and r["drop"] <= r["limit"] == 0.01
    assert r["split"] == "test" and r["images"] > 0 and 0 < r["calibration_images"] <= 64
    assert r["int8_bytes"] < r["fp32_bytes"] / 2 and r["excluded_nodes"] > 0
    with using_home(home):
        v = registry.get_version("qdet", "2")
        assert v.tags["precision"] == "int8" and v.tags["quantized_from"] == "qdet/1"
        assert v.aliases == [] and registry.get_alias("qdet", "champion") == "1"  # nothing promoted by itself
        card = registry.get_card(v)
        assert card.precision == "int8" and card.quantized_from == "qdet/1" and card.cache_key == ""
        assert card.eval is not None and card.eval.map50_95 == pytest.approx(r["int8"])
        assert registry.get_card(registry.get_version("qdet", "1")).precision == "fp32"
        import onnx

        graph = onnx.load(str(registry.resolve_model("qdet/2").onnx_path))
        ops = {n.op_type for n in graph.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: onnxruntime fuses these into int8 kernels
        assert {p.key: p.value for p in graph.metadata_props}["precision"] == "int8"


def test_retraining_hits_the_fp32_version_not_the_int8_one(home, quantized):
    res = run_cli(*DETECT, env=_env(home))
    assert res.returncode == 0, res.stderr
    assert "cached: qdet/1" in res.stderr


def test_int8_serves_like_fp32_with_the_same_schema(home, quantized, tmp_path):
    from visionloop.datasets import synthetic

    image = synthetic.png_bytes(synthetic.render(np.random.default_rng(11), size=96)[0])
    server = Server(["fp=qdet/1", "q=qdet/2"], tmp_path, env=_env(home))
    try:
        models = {m["name"]: m for m in httpx.get(f"{server.url}/v1/models").json()["models"]}
        assert models["fp"]["precision"] == "fp32" and models["q"]["precision"] == "int8"
        answers = {}
        for name in ("fp", "q"):
            r = httpx.post(f"{server.url}/v1/models/{name}/predict", params={"conf": 0.05},
                           files={"file": ("a.png", image, "image/png")})
            assert r.status_code == 200, r.text
            answers[name] = r.json()
        fp, q = answers["fp"], answers["q"]
        assert set(fp) == set(q) and fp["task"] == q["task"] == "detect"
        assert fp["detections"] and q["detections"], (fp, q)
        assert set(fp["detections"][0]) == set(q["detections"][0])
        best = lambda a: max(a["detections"], key=lambda d: d["confidence"])  # noqa: E731
        a, b = best(fp), best(q)
        assert a["class_id"] == b["class_id"]
        assert iou(as_rows([a])[0, :4], as_rows([b])[:, :4])[0] > 0.8
        cmp = httpx.post(f"{server.url}/v1/compare", params={"models": "fp,q", "conf": 0.05},
                         files={"file": ("a.png", image, "image/png")})
        assert cmp.status_code == 200 and {i["model"] for i in cmp.json()["results"]} == {"fp", "q"}
    finally:
        server.stop()


def test_refusal_shows_both_numbers_and_registers_nothing(home, quantized):
    with using_home(home):
        before = [v.version for v in registry.list_versions("qdet")]
        runs = len(registry.client().search_runs([registry.experiment_id("qdet")]))
    res = run_cli("models", "quantize", "qdet/1", "--force", "--max-drop", "-1", env=_env(home))  # a gain of 1.0
    assert res.returncode != 0
    assert "int8 refused for qdet/1: map50_95 fp32 " in res.stderr and "nothing registered" in res.stderr
    assert "Traceback" not in res.stderr and res.stderr.strip().count("\n") < 6
    with using_home(home):
        assert [v.version for v in registry.list_versions("qdet")] == before
        assert len(registry.client().search_runs([registry.experiment_id("qdet")])) == runs


@pytest.mark.parametrize("args, message", [
    (["qdet/2"], "already an int8 version"),
    (["qdet/1"], "qdet/1 already has an int8 version, qdet/2 (--force makes another)"),
    (["qdet/1", "--method", "magic"], "--method must be one of"),
    (["qdet/9"], "no version 9"),
])
def test_bad_requests_are_one_line_errors(home, quantized, args, message):
    res = run_cli("models", "quantize", *args, env=_env(home))
    assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr


def test_train_quantize_int8_classifier_serves_top_k(home, tmp_path):
    res = run_cli(*CLASSIFY, env=_env(home))
    assert res.returncode == 0, res.stderr
    with using_home(home):
        fp32, int8 = registry.get_version("qcls", "1"), registry.get_version("qcls", "2")
        assert int8.tags["precision"] == "int8" and int8.tags["quantized_from"] == "qcls/1"
        c32, c8 = registry.get_card(fp32), registry.get_card(int8)
        assert c8.task == "classify" and c32.eval.top1 >= 0.6  # it learned (chance is 1/3)
        assert c32.eval.top1 - c8.eval.top1 <= 0.01
    from visionloop.datasets import synthetic

    image = synthetic.png_bytes(synthetic.render_classify(np.random.default_rng(2), size=64)[0])
    server = Server(["fp=qcls/1", "q=qcls/2"], tmp_path, env=_env(home))
    try:
        out = {}
        for name in ("fp", "q"):
            r = httpx.post(f"{server.url}/v1/models/{name}/predict", files={"file": ("a.png", image, "image/png")})
            assert r.status_code == 200, r.text
            out[name] = r.json()
        assert set(out["fp"]) == set(out["q"]) and out["q"]["task"] == "classify"
        assert [c["class_name"] for c in out["q"]["classes"]] and len(out["q"]["classes"]) == len(out["fp"]["classes"])
        assert out["fp"]["classes"][0]["class_id"] == out["q"]["classes"][0]["class_id"]
    finally:
        server.stop()
    again = run_cli(*CLASSIFY, env=_env(home))  # a cached training keeps its int8 version
    assert again.returncode == 0, again.stderr
    assert "cached: qcls/1" in again.stderr and "qcls/1 has its int8 version already, qcls/2" in again.stderr
    with using_home(home):
        assert [v.version for v in registry.list_versions("qcls")] == ["1", "2"]
    # another calibration method on demand: registered exactly when its own numbers pass the gate
    res = run_cli("models", "quantize", "qcls/1", "--force", "--method", "percentile", "--json", env=_env(home))
    with using_home(home):
        versions = [v.version for v in registry.list_versions("qcls")]
    if res.returncode == 0:
        report = json.loads(res.stdout)
        assert report["method"] == "percentile" and report["drop"] <= report["limit"] and report["version"] == "qcls/3"
        assert versions == ["1", "2", "3"]
    else:
        assert "int8 refused for qcls/1: top1 fp32" in res.stderr and versions == ["1", "2"]

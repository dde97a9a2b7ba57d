"""Drift: the statistics on known distributions, `monitor` on generated prediction-log traffic."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy import stats

from visionloop.errors import NotFoundError, ValidationError
from visionloop.monitoring.drift import (
    EXIT_CODES,
    MonitorReport,
    bin_counts,
    categorical_counts,
    chi2_pvalue,
    chi2_sf,
    ks_2samp,
    monitor,
    parse_since,
    psi,
)
from visionloop.monitoring.predlog import PredictionRecord, write_batch
from visionloop.store import Store, open_store

CLASSES = ("rock", "paper", "scissors")
EVEN = (1 / 3, 1 / 3, 1 / 3)


def traffic(rng: np.random.Generator, n: int, start: float, span: float, *, version: str = "1",
            brightness: float = 120.0, mix: tuple[float, ...] = EVEN) -> list[PredictionRecord]:
    """``n`` records spread over ``[start, start + span)``: 1-3 detections each, two image sizes."""
    out = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        names = rng.choice(CLASSES, size=k, p=mix)
        w = int(rng.choice([640, 1280]))
        out.append(PredictionRecord(
            ts=start + span * i / n, model="m", version=version, task="detect", width=w, height=w * 3 // 4,
            brightness=float(np.clip(rng.normal(brightness, 25), 0, 255)),
            confidences=rng.uniform(0.3, 1.0, k).round(4).tolist(),
            classes={str(c): int((names == c).sum()) for c in set(names.tolist())}))
    return out


def log_traffic(store: Store, seed: int = 0, *, current: dict | None = None, n: int = 300,
                version: str = "1") -> float:
    """A reference hour 5 h ago and a current hour ending now (``current``: what changed)."""
    rng, now = np.random.default_rng(seed), time.time()
    write_batch(store, traffic(rng, n, now - 5 * 3600, 3600, version=version))
    write_batch(store, traffic(rng, n, now - 3600 + 1, 3590, version=version, **(current or {})))
    return now


# -- statistics -----------------------------------------------------------------------------
def test_psi_small_for_same_distribution_and_large_for_shifted():
    rng = np.random.default_rng(0)
    a, b, c = rng.uniform(0.5, 1.0, 2000), rng.uniform(0.5, 1.0, 2000), rng.uniform(0.0, 0.6, 2000)
    assert psi(*bin_counts(a, b)) < 0.05
    assert psi(*bin_counts(a, c)) > 1.0
    assert psi(*bin_counts(a, np.array([]))) == 0.0


def test_few_distinct_values_are_binned_per_value():
    ref, cur = bin_counts(np.array([640.0] * 50), np.array([640.0] * 40 + [1280.0] * 10))
    assert ref.tolist() == [50, 0] and cur.tolist() == [40, 10]
    assert psi(ref, cur) > 0.25 and chi2_pvalue(ref, cur) < 0.01


def test_chi2_and_ks_match_scipy():
    for x, df in ((3.2, 1), (10.0, 4), (7.5, 3), (20.0, 9)):
        assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-9)
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 500), rng.normal(0.3, 1, 400)
    d, p = ks_2samp(a, b)
    ref = stats.ks_2samp(a, b)
    assert d == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue, rel=0.2, abs=1e-6)
    assert ks_2samp(a, a) == (0.0, 1.0)


def test_sampling_noise_on_small_windows_is_not_drift():
    """30 records a window (the default minimum): 200 seeded same-distribution pairs, at most 2 false alarms."""
    rng = np.random.default_rng(2)
    alarms = 0
    for _ in range(200):
        r, c = bin_counts(rng.normal(120, 30, 30), rng.normal(120, 30, 30))
        alarms += psi(r, c) > 0.25 and chi2_pvalue(r, c) < 0.01
    assert alarms <= 2
    r, c = categorical_counts({"a": 30, "b": 30}, {"a": 5, "b": 55})
    assert psi(r, c) > 0.25 and chi2_pvalue(r, c) < 0.01


def test_parse_since():
    assert parse_since("24h") == timedelta(hours=24)
    assert parse_since("30m") == timedelta(minutes=30)
    for bad in ("yesterday", "0h", ""):
        with pytest.raises(ValidationError, match="bad --since"):
            parse_since(bad)


# -- monitor on generated traffic -----------------------------------------------------------
def test_same_distribution_is_ok(vl_home):
    store = open_store()
    log_traffic(store, seed=3)
    rep = monitor(store, "m", since=timedelta(hours=1))
    assert rep.verdict == "ok" and rep.exit_code == 0, rep.reason
    assert rep.version == "1" and rep.reference.records == 300 and rep.current.records == 300
    assert {f.name for f in rep.features} == {"confidence", "detections_per_image", "width", "height",
                                              "brightness", "class_mix"}
    assert all(f.psi < 0.25 for f in rep.features)


def test_brightness_shift_is_detected(vl_home):
    store = open_store()
    log_traffic(store, seed=4, current={"brightness": 70.0})
    rep = monitor(store, "m", since=timedelta(hours=1))
    assert rep.verdict == "drift" and rep.exit_code == 3
    assert rep.drifted_features == ["brightness"]
    bright = next(f for f in rep.features if f.name == "brightness")
    assert bright.ks is not None and bright.ks > 0.5 and bright.ks_pvalue < 1e-6
    assert rep.current.mean_brightness == pytest.approx(70, abs=5)


def test_changed_class_mix_is_detected(vl_home):
    store = open_store()
    log_traffic(store, seed=5, current={"mix": (0.8, 0.1, 0.1)})
    rep = monitor(store, "m", since=timedelta(hours=1))
    assert rep.verdict == "drift"
    assert rep.drifted_features == ["class_mix"]
    assert "class_mix" in rep.reason


def test_versions_are_compared_separately(vl_home):
    store = open_store()
    log_traffic(store, seed=6, version="1")
    # version 2 started an hour ago with darker traffic: by itself it has no reference yet
    rng = np.random.default_rng(7)
    write_batch(store, traffic(rng, 300, time.time() - 1800, 1799, version="2", brightness=60))
    latest = monitor(store, "m", since=timedelta(hours=1))
    assert latest.version == "2" and latest.verdict == "insufficient_data"
    assert latest.current.records == 0  # its only window is its reference
    assert monitor(store, "m", version="1", since=timedelta(hours=1)).verdict == "ok"


def test_empty_and_tiny_windows_are_insufficient(vl_home):
    store = open_store()
    assert monitor(store, "nobody", since=timedelta(hours=1)).verdict == "insufficient_data"
    rng, now = np.random.default_rng(8), time.time()
    write_batch(store, traffic(rng, 300, now - 5 * 3600, 3600) + traffic(rng, 10, now - 600, 500))
    rep = monitor(store, "m", since=timedelta(hours=1))
    assert rep.verdict == "insufficient_data" and rep.exit_code == EXIT_CODES["insufficient_data"] == 4
    assert rep.current.records == 10 and "fewer than 30" in rep.reason and not rep.features
    assert monitor(store, "m", since=timedelta(hours=1), min_records=5).verdict == "ok"


def test_test_split_reference(vl_home):
    store = open_store()
    now = log_traffic(store, seed=9, current={"brightness": 200.0})
    rng = np.random.default_rng(10)
    asked = []

    def reference(model: str, version: str) -> list[PredictionRecord]:
        asked.append((model, version))
        return traffic(rng, 200, now - 86400, 1, brightness=200.0)

    rep = monitor(store, "m", since=timedelta(hours=1), reference="test", test_reference=reference)
    assert asked == [("m", "1")] and rep.reference_kind == "test"
    assert rep.verdict == "ok" and rep.reference.records == 200 and rep.current.records == 300


# -- the CLI --------------------------------------------------------------------------------
def test_monitor_cli_exit_codes_and_json(vl_home, cli):
    empty = cli("monitor", "--model", "m", "--since", "1h", "--json")
    assert empty.returncode == 4, empty.stderr
    doc = json.loads(empty.stdout)  # the whole of stdout is one JSON document
    assert doc["verdict"] == "insufficient_data" and doc["exit_code"] == 4
    human = cli("monitor", "--model", "m", "--since", "1h")
    assert human.returncode == 4 and "insufficient data" in human.stdout

    log_traffic(open_store(), seed=11, current={"brightness": 60.0})
    r = cli("monitor", "--model", "m", "--since", "1h", "--json")
    assert r.returncode == 3, r.stderr
    report = MonitorReport.model_validate(json.loads(r.stdout))
    assert report.verdict == "drift" and report.drifted_features == ["brightness"]
    assert report.current.records == 300 and report.version == "1"
    human = cli("monitor", "--model", "m", "--since", "1h")
    assert human.returncode == 3 and "drift" in human.stdout and "brightness" in human.stdout

    ok = cli("monitor", "--model", "m", "--since", "1h", "--threshold", "100", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["verdict"] == "ok"
    bad = cli("monitor", "--model", "m", "--reference", "yesterday")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: bad --reference")
    assert "Traceback" not in bad.stderr


def test_windows_respect_now(vl_home):
    store = open_store()
    now = log_traffic(store, seed=12)
    earlier = datetime.fromtimestamp(now - 2 * 3600, timezone.utc)
    rep = monitor(store, "m", since=timedelta(hours=1), now=earlier)
    assert rep.verdict == "insufficient_data" and rep.current.records == 0


# -- the test-split reference, made by the served runtime -----------------------------------
def _register_with_dataset(tiny_model, store: Store) -> str:
    from visionloop import registry
    from visionloop.datasets import synthetic

    manifest = synthetic.commit_generated(store, "shapes-data", 150, seed=21, size=160)
    run = registry.client().create_run(experiment_id="0")
    card = registry.ModelCard(task="detect", classes=tiny_model.classes, imgsz=tiny_model.imgsz, dataset=manifest.ref)
    registry.register_version("shapes", run.info.run_id, tiny_model.onnx, card)
    return manifest.ref


def test_test_split_predictions_run_the_served_runtime(tiny_model, vl_home):
    from visionloop.datasets.catalog import Catalog
    from visionloop.monitoring.reference import test_split_predictions

    store = open_store()
    ref = _register_with_dataset(tiny_model, store)
    test_images = Catalog(store).load(ref).by_split("test")
    recs = test_split_predictions("shapes", "1")
    assert len(recs) == len(test_images) >= 10
    assert {(r.width, r.height) for r in recs} == {(160, 160)}
    assert all(r.model == "shapes" and r.version == "1" and 0 < r.brightness < 255 for r in recs)
    assert sum(len(r.confidences) for r in recs) == sum(sum(r.classes.values()) for r in recs)
    assert set().union(*(r.classes for r in recs)) <= set(tiny_model.classes)
    assert len(test_split_predictions("shapes", "1", limit=3)) == 3

    # live traffic that is the test split again: no drift against the test reference
    now = time.time()
    write_batch(store, [r.model_copy(update={"ts": now - 60 + i * 0.1}) for i, r in enumerate(recs)])
    rep = monitor(store, "shapes", since=timedelta(hours=1), reference="test", min_records=10)
    assert rep.verdict == "ok", rep.reason
    assert rep.reference.records == rep.current.records == len(recs)
    with pytest.raises(NotFoundError, match="file, not a registry version"):
        test_split_predictions("shapes", "file:0123456789ab")


def _darker(data: bytes, factor: float = 0.35) -> bytes:
    import io

    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float) * factor
    out = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _wait_for_records(store: Store, n: int, timeout: float = 60) -> list[PredictionRecord]:
    from visionloop.monitoring.predlog import read_predictions

    deadline = time.monotonic() + timeout
    while True:
        recs = read_predictions(store, "shapes")
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.3)


def test_a_real_server_logs_every_prediction_and_monitor_reads_it(tiny_model, vl_home, tmp_path, cli):
    """`visionloop serve` answers real images; its log against the test-split reference: the
    same images are no drift, darkened ones are a brightness drift."""
    from serving_helpers import Server

    from visionloop.datasets.catalog import Catalog
    from visionloop.monitoring.predlog import mean_brightness
    from visionloop.serving.preprocess import decode_image

    store = open_store()
    ref = _register_with_dataset(tiny_model, store)
    images = [store.get_blob(i.sha256) for i in Catalog(store).load(ref).by_split("test")]
    args = ("monitor", "--model", "shapes", "--since", "1h", "--reference", "test", "--min-records", "10", "--json")
    srv = Server(["shapes@champion"], tmp_path, env={"VISIONLOOP_HOME": str(vl_home)})
    try:
        for data in images:
            r = srv.client.post("/v1/models/shapes/predict", files={"file": ("a.png", data)})
            assert r.status_code == 200, r.text
        recs = _wait_for_records(store, len(images))  # the writer flushes in the background
        assert len(recs) == len(images)
        assert all(r.version == "1" and (r.width, r.height) == (160, 160) for r in recs)
        expected = sorted(mean_brightness(decode_image(d).rgb) for d in images)
        assert sorted(r.brightness for r in recs) == pytest.approx(expected, abs=0.01)
        same = cli(*args)
        assert same.returncode == 0, same.stdout + same.stderr
        assert json.loads(same.stdout)["verdict"] == "ok"

        dark = [_darker(d) for d in images] * 3
        for data in dark:
            assert srv.client.post("/v1/models/shapes/predict", files={"file": ("a.png", data)}).status_code == 200
        assert len(_wait_for_records(store, len(images) + len(dark))) == len(images) + len(dark)
    finally:
        srv.stop()
    shifted = cli(*args)
    assert shifted.returncode == 3, shifted.stdout + shifted.stderr
    report = MonitorReport.model_validate(json.loads(shifted.stdout))
    assert report.verdict == "drift" and "brightness" in report.drifted_features
    assert report.current.records == len(images) + len(dark)

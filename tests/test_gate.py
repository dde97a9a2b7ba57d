"""The promotion gate: a paired bootstrap over test images, frozen vs added test images, the
served-path evaluation behind it, and the evaluation cache key.

Unit part: the vectorized bootstrap AP equals ultralytics' ``ap_per_class`` on resampled data,
is fast, and the decision rules. Acceptance part (real training, real MLflow, generated data):
the champion's own weights registered again are refused, a clearly better model passes, and
report.md shows the intervals of all, frozen and added test images.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from visionloop.evaluation import ClassAP, EvalResult, MatchStats
from visionloop.promotion import Comparison, Gate, comparison_rows, decide
from visionloop.promotion.bootstrap import map50_95, paired_interval, resample_weights


NOISE_SEED = 8  # a detector as good as the champion that scores +0.034 on these images


def fake_stats(n_img: int, seed: int, quality: float = 0.7, fps: int = 60, nc: int = 3,
               detector: int | None = None) -> MatchStats:
    """Plausible matches: each target found at most once (IoU drawn), false positives at lower
    confidence. ``seed`` draws the targets, ``detector`` (default: ``seed``) the detections."""
    truth, rng = np.random.default_rng(seed), np.random.default_rng([seed, seed if detector is None else detector])
    thresholds = np.linspace(0.5, 0.95, 10)
    det_image, conf, pred_cls, tp, target_image, target_cls = [], [], [], [], [], []
    for i in range(n_img):
        classes = truth.integers(0, nc, int(truth.integers(0, 4)))
        target_image += [i] * len(classes)
        target_cls += list(classes)
        for c in classes:
            if rng.random() < quality:
                det_image.append(i), pred_cls.append(c), conf.append(rng.uniform(0.3, 1.0))
                tp.append(rng.uniform(0.4, 1.0) >= thresholds)
        d = int(rng.integers(0, fps))
        det_image += [i] * d
        conf += list(rng.uniform(0.03, 0.6, d) ** 2)
        pred_cls += list(rng.integers(0, nc, d))
        tp += [np.zeros(10, bool)] * d
    return MatchStats(tuple(f"img{i:04d}" for i in range(n_img)), nc, np.array(det_image, np.int32),
                      np.array(conf, np.float32), np.array(pred_cls, np.int32), np.array(tp, bool).reshape(-1, 10),
                      np.array(target_image, np.int32), np.array(target_cls, np.int32))


def ultralytics_map(stats: MatchStats, draws: np.ndarray) -> float:
    """mAP50-95 by ultralytics' own ap_per_class on the resample written out image by image."""
    from ultralytics.utils.metrics import ap_per_class

    picked = np.repeat(np.arange(len(stats.images)), draws.astype(int))
    d = np.concatenate([np.flatnonzero(stats.det_image == i) for i in picked])
    t = np.concatenate([np.flatnonzero(stats.target_image == i) for i in picked])
    ap = ap_per_class(stats.tp[d], stats.conf[d], stats.pred_cls[d], stats.target_cls[t])[5]
    return float(ap.mean()) if len(ap) else 0.0


def test_bootstrap_map_is_ultralytics_ap_per_class_on_each_resample():
    stats = fake_stats(40, seed=1)
    draws = np.vstack([np.ones(40), resample_weights(40, 25, seed=3)])
    ours = map50_95(stats, draws)
    theirs = np.array([ultralytics_map(stats, row) for row in draws])
    assert np.abs(ours - theirs).max() < 1e-9
    assert len(set(np.round(theirs, 6))) > 10  # the resamples really differ


def test_bootstrap_is_reproducible():
    a, b = fake_stats(300, seed=1, fps=300), fake_stats(300, seed=2, quality=0.8, fps=300)
    b = MatchStats(a.images, b.nc, b.det_image, b.conf, b.pred_cls, b.tp, b.target_image, b.target_cls)
    t0 = time.perf_counter()
    point, low, high = paired_interval(a, b, confidence=0.95, resamples=1000, seed=0)
    seconds = time.perf_counter() - t0
    print(f"paired bootstrap, 1000 resamples, 300 images, {len(a.conf) + len(b.conf)} detections: {seconds:.2f}s")
    # no timing threshold here (machines are noisy): the figure is printed and quoted in the notes
    assert low < point < high
    assert paired_interval(a, b, confidence=0.95, resamples=1000, seed=0) == (point, low, high)
    assert paired_interval(a, b, confidence=0.95, resamples=1000, seed=1) != (point, low, high)
    narrow = paired_interval(a, b, confidence=0.5, resamples=1000, seed=0)
    assert low < narrow[1] < narrow[2] < high


def _eval(stats: MatchStats) -> EvalResult:
    m = float(map50_95(stats, np.ones((1, len(stats.images))))[0])
    return EvalResult(model="m.onnx", data="d@2", split="test", images=len(stats.images), instances=1, imgsz=96,
                      map50=m, map50_95=m, precision=0.5, recall=0.5, speed_ms={},
                      per_class=[ClassAP(name=f"c{i}", ap50=m, ap50_95=m) for i in range(stats.nc)])


def _cmp(a: MatchStats, b: MatchStats, frozen: frozenset[str] | None) -> Comparison:
    ea, eb = _eval(a), _eval(b)
    return Comparison(a="m/1", b="m/2", data="d@2", split="test", images=ea.images, rows=comparison_rows(ea, eb),
                      a_eval=ea, b_eval=eb, frozen_data="d@1" if frozen else None).with_stats(a, b, frozen)


def test_the_same_predictions_are_refused_by_the_default_gate():
    a = fake_stats(60, seed=4)
    d = decide(_cmp(a, a, frozenset(a.images[:40])), Gate())
    assert d.bootstrap and d.interval == (0.0, 0.0) and d.delta == 0.0
    assert not d.passed and "lower bound above +0.0000" in d.reasons[0] and "[+0.0000, +0.0000]" in d.reasons[0]
    assert (d.frozen.images, d.added.images) == (40, 20)
    assert d.frozen.interval == (0.0, 0.0) and d.added.interval == (0.0, 0.0)


def _with(stats: MatchStats, keep: np.ndarray) -> MatchStats:
    """The same images and targets; only the detections ``keep``."""
    return MatchStats(stats.images, stats.nc, stats.det_image[keep], stats.conf[keep],
                      stats.pred_cls[keep], stats.tp[keep], stats.target_image, stats.target_cls)


def test_a_noisy_gain_is_refused_a_clear_one_passes():
    champion = fake_stats(30, seed=5, quality=0.6)
    # noise: another detector just as good; on these 30 images it happens to score a little higher
    noisy = fake_stats(30, seed=5, quality=0.6, detector=NOISE_SEED)
    # clearly better: finds 95% of the objects instead of 60%
    better = fake_stats(30, seed=5, quality=0.95, detector=1)

    good = decide(_cmp(champion, better, None), Gate())
    assert good.passed and good.interval[0] > 0 and good.delta > 0, good.summary()
    assert good.frozen is None and good.added is None and "95% interval" in good.summary()
    d = decide(_cmp(champion, noisy, None), Gate())
    assert d.delta > 0 and not d.passed and d.interval[0] < 0 < d.interval[1], d.summary()
    # the point estimate alone (the old gate) would have promoted the noise
    point = decide(_cmp(champion, noisy, None), Gate(resamples=0))
    assert point.passed and not point.bootstrap and point.interval == (point.delta, point.delta)


def test_a_regression_on_the_frozen_images_is_refused_even_with_an_overall_gain():
    a = fake_stats(60, seed=7, quality=0.5)
    frozen = frozenset(a.images[:30])
    # challenger: perfect on the added images, loses every hit on the frozen ones
    hit_on_added = np.array([a.images[i] not in frozen for i in a.det_image]) & a.tp[:, 0]
    b = _with(a, hit_on_added)
    d = decide(_cmp(a, b, frozen), Gate(min_delta=-1.0, max_class_drop=1.0))
    assert d.passed  # only the frozen rule can refuse it: loosen it a little
    d = decide(_cmp(a, b, frozen), Gate(min_delta=-1.0, max_class_drop=0.05))
    assert not d.passed and any("frozen test images (d@1, 30)" in r for r in d.reasons)
    assert d.frozen.delta < -0.05 and d.added.delta > 0


# -- acceptance: real training, real registry -------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """gate@1 (160 images); gatem/1 a 1-epoch champion; gatem/2 the same ONNX registered again;
    gate@2 = gate@1 + 80 new images; gatem/3 trained 12 epochs on gate@2 (clearly better)."""
    from loop_fixtures import isolated_home, make_dataset, train

    from visionloop import registry
    from visionloop.datasets import images, synthetic
    from visionloop.datasets.catalog import Catalog, DraftImage
    from visionloop.store import open_store

    home = tmp_path_factory.mktemp("gate-home")
    with isolated_home(home):
        make_dataset("gate", 160, seed=5)
        assert train("gate@1", "gatem", epochs=1) == "1"
        champ = registry.resolve_model("gatem/1")
        again = registry.register_version("gatem", champ.run_id, champ.onnx_path, champ.card,
                                          description="the champion's own weights, again")
        assert again.version == "2"
        store = open_store()
        drafts = [DraftImage(store.put_blob(p.data), p.ext, p.width, p.height, s.boxes, source=s.name)
                  for s in synthetic.generate(80, seed=55, size=96) for p in [images.prepare(s.data)]]
        Catalog(store).commit("gate", synthetic.CLASSES, drafts, add_to_parent=True)
        assert train("gate@2", "gatem", epochs=12) == "3"
    return home


def vl(home, *args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "VISIONLOOP_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "visionloop", *args], capture_output=True, text=True, env=env,
                          timeout=900, cwd=cwd)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_own_weights_refused_better_model_passes_and_report_shows_both_sets(models, tmp_path):
    from loop_fixtures import isolated_home

    from visionloop import promotion, registry

    same = vl(models, "models", "promote", "gatem/2")
    assert same.returncode != 0
    assert "gate refused gatem/2" in same.stderr and "[+0.0000, +0.0000]" in same.stderr, same.stderr
    assert len(same.stderr.strip().splitlines()) == 1

    report = tmp_path / "report.md"
    r = vl(models, "report", "--new", "gatem/3", "--old", "gatem/1", "--out", str(report))
    assert r.returncode == 0, r.stderr
    text = report.read_text()
    assert "Gate **passed**" in text and "95% interval (1000 paired resamples)" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    for label in ("all (`gate@2` test)", "frozen (`gate@1`)", "added since"):
        assert label in rows and rows[label].count("[+") == 1, text  # each set with a positive interval
    with isolated_home(models):
        cmp = promotion.compare("gatem/1", "gatem/3")
        d = promotion.decide(cmp, promotion.Gate())
        v1 = registry.get_card("gatem/1")  # trained on gate@1; compared on gate@2 (the newer)
    assert cmp.data == "gate@2" and cmp.frozen_data == "gate@1" and v1.dataset == "gate@1"
    assert d.passed and d.interval[0] > 0 and d.frozen.images + d.added.images == cmp.images
    assert d.frozen.images > 0 and d.added.images > 0
    refused_report = tmp_path / "refused.md"
    r = vl(models, "report", "--new", "gatem/2", "--old", "gatem/1", "--out", str(refused_report))
    assert r.returncode == 0, r.stderr
    assert "Gate **refused**" in refused_report.read_text() and "[+0.0000, +0.0000]" in refused_report.read_text()

    up = vl(models, "models", "promote", "gatem/3")
    assert up.returncode == 0, up.stderr
    assert "gate passed" in up.stdout and "95% interval" in up.stdout and "frozen" in up.stdout


def _unclipped(dets: np.ndarray, lb) -> np.ndarray:
    """The served ``scale_boxes`` without its clip to the image (ultralytics val does not clip)."""
    out = dets.copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - lb.pad_x) / lb.gain_x
    out[:, [1, 3]] = (out[:, [1, 3]] - lb.pad_y) / lb.gain_y
    return out


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_served_evaluation_agrees_with_ultralytics_val_on_square_images(models, tmp_path, monkeypatch):
    """On square images at the model's size both letterboxes are the identity, so the served path
    (Pillow decode, numpy NMS of the best class, boxes clipped to the image as ``predict`` and the
    server return them) and ``YOLO(onnx).val(rect=False)`` (OpenCV, torch NMS, multi-label,
    unclipped boxes) agree: within 1e-3 once the clip is undone (often exactly; torch and numpy NMS
    can break a near-tie between two boxes differently), within 0.01 with it (the clip moves
    boxes that cross the border, and with them a few IoUs across a threshold)."""
    from loop_fixtures import isolated_home
    from ultralytics import YOLO

    from visionloop import promotion, registry
    from visionloop.datasets.materialize import materialize
    from visionloop.serving import runtime
    from visionloop.settings import get_settings
    from visionloop.training.evaluate import run_evaluation

    with isolated_home(models):
        m = registry.resolve_model("gatem/3")
        manifest = promotion.Catalog(promotion.open_store()).load("gate@2")
        served = promotion.evaluate_cached(m, manifest, "test")
        data_yaml = materialize(promotion.open_store(), manifest, get_settings().cache_dir)
        monkeypatch.setattr(runtime, "scale_boxes", _unclipped)
        unclipped = run_evaluation(m.onnx_path, manifest, "test").result
    val = YOLO(str(m.onnx_path), task="detect").val(
        data=str(data_yaml), split="test", imgsz=served.imgsz, batch=1, device="cpu", rect=False, plots=False,
        project=str(tmp_path), name="val", verbose=False)
    print(f"mAP50-95: served {served.map50_95:.4f}, served unclipped {unclipped.map50_95:.4f}, "
          f"ultralytics val {val.box.map:.4f}")
    assert val.box.map > 0.05  # a model that learned something: the comparison compares numbers
    assert unclipped.map50_95 == pytest.approx(val.box.map, abs=1e-3)
    assert unclipped.map50 == pytest.approx(val.box.map50, abs=1e-3)
    assert served.map50_95 == pytest.approx(val.box.map, abs=0.01)
    assert served.images == len(manifest.by_split("test")) and served.instances == int(val.nt_per_class.sum())


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_eval_cache_keys_on_the_evaluator_version(models, monkeypatch):
    from loop_fixtures import isolated_home

    from visionloop import promotion, registry
    from visionloop.training import evaluate

    calls = []
    real = evaluate.run_evaluation
    monkeypatch.setattr(evaluate, "run_evaluation", lambda *a, **k: calls.append(a) or real(*a, **k))
    with isolated_home(models):
        m = registry.resolve_model("gatem/1")
        manifest = promotion.Catalog(promotion.open_store()).load("gate@1")
        first = promotion.cached_evaluation(m, manifest, "test")
        promotion.cached_evaluation(m, manifest, "test")
        assert len(calls) <= 1  # the second answer came from the cache (the first may too)
        n = len(calls)
        monkeypatch.setattr(evaluate, "evaluator_version", lambda: "a-changed-evaluator")
        again = promotion.cached_evaluation(m, manifest, "test")
    assert len(calls) == n + 1  # a new evaluator never answers from the old cache
    assert again.result.model_dump(exclude={"speed_ms"}) == first.result.model_dump(exclude={"speed_ms"})
    assert again.stats.images == first.stats.images and (again.stats.tp == first.stats.tp).all()


def test_evaluator_version_follows_the_metric_library(monkeypatch):
    from visionloop.training import evaluate

    here = evaluate.evaluator_version()
    assert here == evaluate.evaluator_version() and len(here) == 16
    monkeypatch.setattr(evaluate, "version", lambda lib: "0.0.1")
    assert evaluate.evaluator_version() != here

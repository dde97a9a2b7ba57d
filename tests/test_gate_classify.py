"""The promotion gate, comparison, report and model listings for classification models.

Unit part: top-1 over bootstrap resamples (ClassifyStats), the gate's decisions on constructed
per-image results (a clearly better challenger passes, an equal, worse or noisy one is refused,
a class whose accuracy collapses is refused), the comparison rows and the report's markdown.
End to end: two real classification ONNX files (constant outputs, no training) evaluated by the
served code path on a real classify dataset version, registered, then `models compare`,
`models promote`, `report`, `models list` / `show` as a user runs them.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from visionloop import reports
from visionloop.errors import ValidationError
from visionloop.evaluation import ClassAccuracy, ClassAP, ClassifyStats, EvalResult, MatchStats, stats_from_bytes
from visionloop.promotion import Comparison, Gate, comparison_rows, decide
from visionloop.promotion.bootstrap import paired_interval, primary_metric, resample_weights, top1

CLASSES = ["circle", "square", "triangle"]


def cls_stats(true: np.ndarray, pred: np.ndarray, nc: int = 3) -> ClassifyStats:
    """Per image the true class and a top-k whose first entry is ``pred`` (then the other classes)."""
    k = min(5, nc)
    topk = np.array([[p, *[c for c in range(nc) if c != p]][:k] for p in pred], dtype=np.int32).reshape(-1, k)
    return ClassifyStats(tuple(f"img{i:04d}" for i in range(len(true))), nc, np.asarray(true, np.int32), topk)


def drawn(n: int, seed: int, accuracy: float, nc: int = 3, truth_seed: int = 0) -> ClassifyStats:
    """``n`` images (classes from ``truth_seed``), each right with probability ``accuracy``."""
    true = np.random.default_rng(truth_seed).integers(0, nc, n)
    rng = np.random.default_rng([truth_seed, seed])
    wrong = (true + rng.integers(1, nc, n)) % nc
    return cls_stats(true, np.where(rng.random(n) < accuracy, true, wrong), nc)


def cls_eval(stats: ClassifyStats) -> EvalResult:
    """The record the served evaluation writes for these per-image results."""
    right = stats.correct()
    per_class = [ClassAccuracy(name=name, images=int((stats.true_cls == c).sum()),
                               accuracy=float(right[stats.true_cls == c].mean()) if (stats.true_cls == c).any() else 0.0)
                 for c, name in enumerate(CLASSES[: stats.nc])]
    return EvalResult(model="m.onnx", data="cls@2", split="test", task="classify", images=len(stats.images),
                      instances=len(stats.images), imgsz=64, top1=float(right.mean()),
                      top5=float((stats.topk == stats.true_cls[:, None]).any(1).mean()),
                      per_class_accuracy=per_class, speed_ms={"inference": 1.0})


def cmp_of(a: ClassifyStats, b: ClassifyStats, frozen: frozenset[str] | None = None) -> Comparison:
    ea, eb = cls_eval(a), cls_eval(b)
    return Comparison(a="cls/1", b="cls/2", data="cls@2", split="test", images=ea.images, rows=comparison_rows(ea, eb),
                      a_eval=ea, b_eval=eb, frozen_data="cls@1" if frozen else None).with_stats(a, b, frozen)


def test_top1_on_each_resample_is_the_resample_written_out():
    stats = drawn(50, seed=1, accuracy=0.6)
    draws = np.vstack([np.ones(50), resample_weights(50, 30, seed=2)])
    ours = top1(stats, draws)
    right = stats.correct()
    theirs = np.array([right[np.repeat(np.arange(50), row.astype(int))].mean() for row in draws])
    assert np.abs(ours - theirs).max() < 1e-12
    assert ours[0] == cls_eval(stats).top1  # all weights 1: the evaluation's own top-1
    assert len(set(np.round(theirs, 6))) > 5  # the resamples really differ
    assert (primary_metric(stats, draws) == ours).all()


def test_the_classify_interval_is_paired_and_reproducible():
    a, b = drawn(200, seed=1, accuracy=0.6), drawn(200, seed=2, accuracy=0.7)
    point, low, high = paired_interval(a, b, confidence=0.95, resamples=1000, seed=0)
    assert point == pytest.approx(cls_eval(b).top1 - cls_eval(a).top1)
    assert low < point < high
    assert paired_interval(a, b, confidence=0.95, resamples=1000, seed=0) == (point, low, high)
    narrow = paired_interval(a, b, confidence=0.5, resamples=1000, seed=0)
    assert low < narrow[1] < narrow[2] < high
    assert paired_interval(a, a, confidence=0.95, resamples=200, seed=0) == (0.0, 0.0, 0.0)


def test_a_clearly_better_classifier_passes_an_equal_or_worse_one_is_refused():
    champion = drawn(150, seed=1, accuracy=0.5)
    better = drawn(150, seed=2, accuracy=0.95)
    d = decide(cmp_of(champion, better), Gate())
    assert d.passed and d.metric == "top-1" and d.bootstrap and d.interval[0] > 0, d.summary()
    assert d.delta == pytest.approx(cls_eval(better).top1 - cls_eval(champion).top1)
    assert d.summary().startswith(f"top-1 change {d.delta:+.4f}, [") and "mAP" not in d.summary()

    same = decide(cmp_of(champion, champion), Gate())
    assert not same.passed and same.interval == (0.0, 0.0)
    assert same.reasons == ["top-1 changed by +0.0000, interval [+0.0000, +0.0000]; the gate asks for a lower bound "
                            "above +0.0000"]
    worse = decide(cmp_of(better, champion), Gate())
    assert not worse.passed and worse.delta < 0 and worse.interval[1] < 0
    assert any(r.startswith("top-1 changed by -") for r in worse.reasons)


def test_a_noisy_gain_is_refused_the_point_estimate_alone_would_pass():
    champion = drawn(30, seed=1, accuracy=0.7)
    pred = champion.topk[:, 0].copy()
    wrong = np.flatnonzero(~champion.correct())[:2]
    pred[wrong] = champion.true_cls[wrong]  # two more images right out of 30: within the noise
    noisy = cls_stats(champion.true_cls, pred)
    d = decide(cmp_of(champion, noisy), Gate())
    assert d.delta == pytest.approx(2 / 30) and not d.passed and d.interval[0] <= 0 < d.interval[1], d.summary()
    point = decide(cmp_of(champion, noisy), Gate(resamples=0))
    assert point.passed and not point.bootstrap and point.interval == (point.delta, point.delta)


def test_a_class_whose_accuracy_collapses_is_refused_even_with_an_overall_gain():
    true = np.repeat([0, 1, 2], [60, 60, 20])
    champion = cls_stats(true, np.where(np.arange(140) % 2 == 0, true, (true + 1) % 3))  # 50% right everywhere
    # challenger: every circle and square right, every triangle wrong (accuracy 0.5 -> 0)
    lopsided = cls_stats(true, np.where(true == 2, 0, true))
    d = decide(cmp_of(champion, lopsided), Gate())
    assert d.delta > 0.3 and d.interval[0] > 0  # a clear overall gain ...
    assert not d.passed and d.worst_class == "triangle" and d.worst_class_drop == pytest.approx(0.5)
    assert d.reasons == ["class 'triangle' lost 0.5000 accuracy, the gate allows 0.0500"]  # ... refused for one class
    assert "worst class drop 0.5000 (triangle; max 0.0500)" in d.summary()
    assert decide(cmp_of(champion, lopsided), Gate(max_class_drop=0.6)).passed


def test_a_regression_on_the_frozen_images_is_refused():
    true = np.arange(80) % 3
    champion = cls_stats(true, true)  # all right
    frozen = frozenset(champion.images[:40])
    # challenger: wrong on the first 21 frozen images (7 of each class), right elsewhere; every class
    # loses about 0.26 accuracy, the frozen images 21/40
    pred = true.copy()
    pred[:21] = (true[:21] + 1) % 3
    b = cls_stats(true, pred)
    d = decide(cmp_of(champion, b, frozen), Gate(min_delta=-1.0, max_class_drop=0.3))
    assert d.frozen.images == 40 and d.added.images == 40 and d.added.delta == 0.0
    assert d.frozen.delta == pytest.approx(-21 / 40) and d.worst_class_drop == pytest.approx(7 / 26)
    assert not d.passed and d.reasons == ["the frozen test images (cls@1, 40) lost 0.5250 top-1, the gate allows 0.3000"]
    assert decide(cmp_of(champion, b, frozen), Gate(min_delta=-1.0, max_class_drop=0.6)).passed


def test_comparison_rows_for_classify_and_a_task_mismatch_is_an_error():
    a = cls_eval(drawn(40, seed=1, accuracy=0.5))
    b = cls_eval(drawn(40, seed=2, accuracy=0.9))
    rows = comparison_rows(a, b)
    assert [r.metric for r in rows] == ["top-1", "top-5", "accuracy circle", "accuracy square", "accuracy triangle"]
    assert (rows[0].a, rows[0].b, rows[0].change) == (a.top1, b.top1, b.top1 - a.top1)
    assert rows[2].a == a.per_class_accuracy[0].accuracy and rows[2].b == b.per_class_accuracy[0].accuracy
    det = EvalResult(model="d.onnx", data="d@1", split="test", images=40, instances=60, imgsz=64, map50=0.5,
                     map50_95=0.3, precision=0.5, recall=0.5, per_class=[ClassAP(name="circle", ap50=0.5, ap50_95=0.3)],
                     speed_ms={})
    with pytest.raises(ValidationError, match=r"cannot compare d.onnx \(detect\) with m.onnx \(classify\)"):
        comparison_rows(det, b)
    empty = MatchStats(("img0000",), 3, *(np.zeros(0, t) for t in (np.int32, np.float32, np.int32)),
                       np.zeros((0, 10), bool), np.zeros(0, np.int32), np.zeros(0, np.int32))
    with pytest.raises(ValidationError, match="detection evaluation with a classification one"):
        paired_interval(empty, drawn(1, seed=0, accuracy=1.0), confidence=0.95, resamples=10, seed=0)


def test_classify_stats_survive_the_cache_format():
    s = drawn(12, seed=3, accuracy=0.5)
    back = stats_from_bytes(s.to_bytes())
    assert isinstance(back, ClassifyStats) and back.images == s.images
    assert (back.topk == s.topk).all() and (back.true_cls == s.true_cls).all()


def _table_text(table) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    return out.getvalue()


def test_report_and_tables_show_classification_metrics(vl_home, tmp_path):
    from visionloop.cli.tables import comparison_table, gate_table
    from visionloop.datasets import images, synthetic
    from visionloop.datasets.catalog import Catalog, DraftImage
    from visionloop.store import open_store

    true = np.repeat([0, 1, 2], [40, 40, 40])
    old = cls_stats(true, np.where(np.arange(120) % 2 == 0, true, (true + 1) % 3))
    new = cls_stats(true, np.where(np.arange(120) % 10 == 0, (true + 1) % 3, true))
    cmp = cmp_of(old, new, frozenset(old.images[:60]))
    d = decide(cmp, Gate())
    assert d.passed, d.summary()

    store = open_store()
    drafts = [DraftImage(store.put_blob(p.data), p.ext, p.width, p.height, class_id=cid, source=s.name)
              for s, cid in zip(synthetic.generate(9, seed=3, size=64), [0, 0, 1, 1, 2, 2, 0, 1, 2])
              for p in [images.prepare(s.data)]]
    cat = Catalog(store)
    v1 = cat.commit("cls", CLASSES, drafts[:6], task="classify").manifest
    v2 = cat.commit("cls", CLASSES, drafts[6:], task="classify", add_to_parent=True).manifest
    rep = reports.Report(title="visionloop: cls", old="cls/1", new="cls/2", comparison=cmp, decision=d, promoted=True,
                         dataset=reports.dataset_change(v1, v2))
    text = reports.render(rep)
    assert "| top-1 | 0.5000 | 0.9000 | +0.4000 ⬆ |" in text
    assert "| top-5 | 1.0000 | 1.0000 | +0.0000 |" in text  # 3 classes: the true one is always among the top 5
    assert "| accuracy circle | 0.5000 | 0.9000 | +0.4000 ⬆ |" in text
    assert "on the lower bound of the top-1 change" in text and "| test images | images | old top-1 | new top-1 |" in text
    assert "| all (`cls@2` test) | 120 | 0.5000 | 0.9000 | +0.4000 |" in text
    assert "| class | images old | images new | change |" in text and "| circle | 2 | 3 | +1 |" in text
    assert "mAP" not in text and "AP50-95" not in text and "boxes" not in text

    single = reports.render(reports.Report(title="t", new="cls/1", single=cls_eval(old),
                                           dataset=reports.dataset_change(None, v1)))
    assert "| top-1 | 0.5000 |" in single and "| accuracy triangle | 0.5000 |" in single
    assert "| class | images |" in single and "mAP" not in single

    table = _table_text(comparison_table(cmp, color=False))
    assert "top-1" in table and "accuracy square" in table and "+0.4000" in table
    gate = _table_text(gate_table(d, cmp, color=False))
    assert "A top-1" in gate and "B top-1" in gate and "0.9000" in gate and "mAP" not in gate


# -- end to end: real classification ONNX models, the served evaluation, the registry, the CLI ------
def _constant_classifier(path, probs: list[float]):
    from serving_helpers import constant_model

    names = "{" + ", ".join(f"{i}: '{c}'" for i, c in enumerate(CLASSES)) + "}"
    return constant_model(path, np.array([probs], np.float32), {"names": names, "imgsz": "[64, 64]", "task": "classify"})


def test_compare_promote_report_and_list_classifiers_end_to_end(vl_home, tmp_path, cli):
    from visionloop import registry
    from visionloop.datasets import images, synthetic
    from visionloop.datasets.catalog import Catalog, DraftImage
    from visionloop.datasets.manifest import SplitPolicy
    from visionloop.registry import ModelCard
    from visionloop.store import open_store
    from visionloop.training.evaluate import run_evaluation

    # test split: 14 circles, 4 squares, 2 triangles; a model always saying "square" is right on 4,
    # one always saying "circle" on 14 (but every square it gets wrong)
    labels = [0] * 14 + [1] * 4 + [2] * 2
    splits = ["test"] * 20 + ["train"] * 3
    store = open_store()
    drafts = [DraftImage(store.put_blob(p.data), p.ext, p.width, p.height, class_id=cid, source=s.name, split=sp)
              for s, cid, sp in zip(synthetic.generate(23, seed=4, size=64), labels + [0, 1, 2], splits)
              for p in [images.prepare(s.data)]]
    manifest = Catalog(store).commit("cls", CLASSES, drafts, task="classify",
                                     split_policy=SplitPolicy(mode="source")).manifest
    assert len(manifest.by_split("test")) == 20

    says_square = _constant_classifier(tmp_path / "square.onnx", [0.1, 0.8, 0.1])
    says_circle = _constant_classifier(tmp_path / "circle.onnx", [0.7, 0.2, 0.1])
    def new_run() -> str:  # one run per version: a run holds one model/ (ONNX and card)
        return registry.client().create_run(registry.experiment_id("cls-test")).info.run_id

    for onnx in (says_square, says_circle, says_circle):
        ev = run_evaluation(onnx, manifest, "test").result
        card = ModelCard(task="classify", classes=CLASSES, imgsz=64, dataset=manifest.ref, eval=ev)
        registry.register_version("clsm", new_run(), onnx, card)
    assert registry.get_card("clsm/1").eval.top1 == pytest.approx(4 / 20)
    assert registry.get_card("clsm/2").eval.top1 == pytest.approx(14 / 20)
    det_card = ModelCard(task="detect", classes=CLASSES, imgsz=64, dataset=manifest.ref)
    registry.register_version("detm", new_run(), says_square, det_card)

    r = cli("models", "compare", "clsm/1", "clsm/2", "--json")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    rows = {row["metric"]: row for row in body["rows"]}
    assert body["data"] == "cls@1" and body["images"] == 20
    assert rows["top-1"]["a"] == pytest.approx(0.2) and rows["top-1"]["b"] == pytest.approx(0.7)
    assert rows["accuracy square"]["a"] == 1.0 and rows["accuracy square"]["b"] == 0.0
    assert body["gate"]["metric"] == "top-1" and body["gate"]["interval"][0] > 0  # the gain is clear ...
    assert body["gate"]["passed"] is False and body["gate"]["worst_class"] == "square"  # ... a class collapsed
    table = cli("models", "compare", "clsm/1", "clsm/2")
    assert table.returncode == 0 and "accuracy circle" in table.stdout and "A top-1" in table.stdout

    refused = cli("models", "promote", "clsm/2")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "gate refused clsm/2: class 'square' lost 1.0000 accuracy" in refused.stderr, refused.stderr
    assert registry.get_alias("clsm", registry.CHAMPION) == "1"

    report = tmp_path / "report.md"
    rep = cli("report", "--new", "clsm/2", "--old", "clsm/1", "--out", str(report))
    assert rep.returncode == 0, rep.stderr
    text = report.read_text()
    assert "| top-1 | 0.2000 | 0.7000 | +0.5000 ⬆ |" in text and "| accuracy square | 1.0000 | 0.0000 | -1.0000 ⬇ |" in text
    assert "Gate **refused**" in text and "old top-1" in text and "mAP" not in text

    config = tmp_path / "visionloop.yaml"
    config.write_text("gate:\n  max_class_drop: 1.0\n")
    up = cli("models", "promote", "clsm/2", "--config", str(config))
    assert up.returncode == 0, up.stderr
    assert "gate passed: top-1 change +0.5000" in up.stdout
    assert registry.get_alias("clsm", registry.CHAMPION) == "2"
    same = cli("models", "promote", "clsm/3", "--config", str(config))  # the champion's ONNX again
    assert same.returncode != 0 and "top-1 changed by +0.0000, interval [+0.0000, +0.0000]" in same.stderr

    mixed = cli("models", "compare", "clsm/1", "detm/1")
    assert mixed.returncode != 0
    assert mixed.stderr.strip().splitlines() == ["error: cannot compare clsm/1 (classify) with detm/1 (detect): "
                                                 "both models must have the same task"]

    wide = {"COLUMNS": "200"}  # rich wraps headers to the terminal's width
    listed = cli("models", "list", env=wide)
    assert listed.returncode == 0, listed.stderr
    assert "champion top-1" in listed.stdout and "champion mAP50" in listed.stdout  # both tasks are registered
    (clsm,) = [m for m in json.loads(cli("models", "list", "--json").stdout) if m["name"] == "clsm"]
    assert clsm["task"] == "classify" and clsm["champion_metrics"]["top1"] == pytest.approx(0.7)
    versions = cli("models", "show", "clsm", env=wide)
    assert versions.returncode == 0 and "top-1" in versions.stdout and "mAP50" not in versions.stdout
    assert "0.200" in versions.stdout and "0.700" in versions.stdout
    one = cli("models", "show", "clsm/1", env=wide)
    assert one.returncode == 0 and "accuracy square" in one.stdout and "top1" in one.stdout

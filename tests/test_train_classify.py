"""Issue 13, training: `visionloop train` on classify versions through the real CLI, real training.

One module-scoped home holds generated shapes (classify) and rock-paper-scissors crops (one crop
per box of ../shared/datasets/rock-paper-scissors); trainings there are from yolo11n-cls.yaml
at 32 px for a few epochs. The tests check the MLflow run (top-1/top-5 per epoch, confusion
matrix), the registered version (card.task classify, eval.top1), ONNX parity on a non-empty set,
learning on shapes, and transfer from the shapes model onto the 3 RPS classes (a new head,
layers frozen with --freeze).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionloop import registry

from classify_fixtures import import_rps_crops
from conftest import run_cli
from test_training_pipeline import _env, using_home

IMGSZ = "32"
SHAPES = ["train", "--data", "cshapes@1", "--epochs", "8", "--imgsz", IMGSZ, "--device", "cpu", "--name", "cshapes"]
RPS_TRAIN = ["train", "--data", "rpsc@1", "--model", "yolo11n-cls.yaml", "--epochs", "3", "--imgsz", IMGSZ,
             "--device", "cpu", "--name", "rps-cls"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """shapes (classify, generated) and RPS crops committed; the shapes model trained once."""
    from visionloop.datasets import synthetic
    from visionloop.store import open_store

    home = tmp_path_factory.mktemp("cls-home")
    with using_home(home):
        store = open_store()
        synthetic.commit_generated(store, "cshapes", 150, seed=3, size=64, task="classify")
        m = import_rps_crops(store, "rpsc", tmp_path_factory.mktemp("rps-crops"), limit_per_split=40)
        assert m.classes == ["paper", "rock", "scissors"] and all(m.split_counts().values())
    shapes = run_cli(*SHAPES, env=_env(home))
    assert shapes.returncode == 0, shapes.stderr
    return home, shapes


def _run_of(model: str, version: str):
    mv = registry.get_version(model, version)
    return mv, registry.client().get_run(mv.run_id)


def test_shapes_model_learns_and_is_registered_as_classify(home):
    home, shapes = home
    assert "yolo11n-cls.yaml" in shapes.stdout  # no --model: the classify default
    with using_home(home):
        mv, run = _run_of("cshapes", "1")
        card = registry.get_card(mv)
        assert card.task == "classify" and mv.tags["task"] == "classify"
        assert card.classes == ["circle", "square", "triangle"]
        ev = card.eval
        assert ev is not None and ev.task == "classify" and ev.split == "test"
        assert ev.images == ev.instances > 0
        assert ev.top1 >= 0.6, ev  # chance is 1/3
        assert ev.top5 == 1.0  # 3 classes: top-5 is all of them
        assert [c.name for c in ev.per_class_accuracy] == card.classes
        assert sum(c.images for c in ev.per_class_accuracy) == ev.images
        assert mv.tags["metrics.top1"] == f"{ev.top1:.5f}"
        assert run.data.metrics["test/top1"] == pytest.approx(ev.top1)


def test_rps_crops_run_tracks_topk_per_epoch_and_parity(home):
    home, _ = home
    res = run_cli(*RPS_TRAIN, env=_env(home))
    assert res.returncode == 0, res.stderr
    assert "top-1" in res.stderr and "mAP" not in res.stderr  # the steps' detail lines
    with using_home(home):
        mv, run = _run_of("rps-cls", "1")
        assert run.info.status == "FINISHED" and run.data.params["task"] == "classify"
        c = registry.client()
        for key in ("metrics/accuracy_top1", "metrics/accuracy_top5", "train/loss", "val/loss"):
            assert [m.step for m in c.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
        artifacts = {a.path for d in ("plots", "eval", "export") for a in c.list_artifacts(run.info.run_id, d)}
        assert {"plots/confusion_matrix.png", "eval/confusion.json", "eval/eval.json", "export/model.onnx"} <= artifacts
        card = registry.get_card(mv)
        assert card.task == "classify" and card.classes == ["paper", "rock", "scissors"]
        assert card.base_model == "yolo11n-cls.yaml" and card.eval.top1 is not None
        # parity: every compared image had the same top-1 and probabilities within 1e-3
        assert card.parity.images == card.parity.compared > 0
        assert card.parity.max_conf_diff <= 1e-3
        conf = json.loads(Path(c.download_artifacts(run.info.run_id, "eval/confusion.json")).read_text())
        assert conf["classes"] == card.classes
        counts = conf["counts"]
        assert sum(map(sum, counts)) == card.eval.images
        # the diagonal over the row sums is the per-class accuracy the card holds
        for i, pc in enumerate(card.eval.per_class_accuracy):
            assert sum(counts[i]) == pc.images
            if pc.images:
                assert counts[i][i] / pc.images == pytest.approx(pc.accuracy)


def test_transfer_from_shapes_onto_rps_gets_a_new_head_and_freezes(home):
    home, _ = home
    with using_home(home):
        mv, _ = _run_of("cshapes", "1")
        pt = Path(registry.client().download_artifacts(mv.run_id, "weights/best.pt"))
    res = run_cli("train", "--data", "rpsc@1", "--model", str(pt), "--freeze", "4", "--epochs", "2", "--imgsz",
                  IMGSZ, "--device", "cpu", "--name", "rps-transfer", env=_env(home))
    assert res.returncode == 0, res.stderr
    assert "transferred" in res.stderr and "new: model.10.linear" in res.stderr
    with using_home(home):
        mv, run = _run_of("rps-transfer", "1")
        p = run.data.params
        copied, total = (int(x) for x in p["transfer.tensors"].split("/"))
        assert 0 < copied < total  # the backbone came from the shapes model, the head is new
        assert p["transfer.new"] == "model.10.linear"
        assert p["transfer.source_classes"] == "circle,square,triangle"
        assert p["freeze"] == "4" and int(p["transfer.frozen_tensors"]) > 0
        card = registry.get_card(mv)
        assert card.task == "classify" and card.classes == ["paper", "rock", "scissors"]
        assert card.base_model == str(pt)


def test_detection_model_on_classify_data_is_refused_before_any_run(home, tmp_path):
    home, _ = home
    res = run_cli("train", "--data", "rpsc@1", "--model", "yolo11n.yaml", "--epochs", "1", "--imgsz", IMGSZ,
                  "--device", "cpu", "--name", "wrong-task", env=_env(home))
    assert res.returncode != 0
    assert "yolo11n.yaml is a detect model but the dataset is a classify dataset" in res.stderr
    assert "--model yolo11n-cls.yaml" in res.stderr
    bad = run_cli("train", "--data", "rpsc@1", "--freeze", "-1", env=_env(home))
    assert bad.returncode != 0 and "--freeze: must not be negative" in bad.stderr
    with using_home(home):
        names = {m.name for m in registry.client().search_registered_models()}
        runs = registry.client().search_runs([e.experiment_id for e in registry.client().search_experiments()],
                                             filter_string="tags.`visionloop.model_name` = 'wrong-task'")
    assert "wrong-task" not in names and not runs


def test_same_classes_keep_the_whole_model(home):
    """Fine-tuning onto the classes it already knows reuses every tensor, the head included."""
    home, _ = home
    with using_home(home):
        mv, _ = _run_of("cshapes", "1")
        pt = Path(registry.client().download_artifacts(mv.run_id, "weights/best.pt"))
    res = run_cli("train", "--data", "cshapes@1", "--model", str(pt), "--epochs", "1", "--imgsz", IMGSZ,
                  "--device", "cpu", "--name", "cshapes-again", env=_env(home))
    assert res.returncode == 0, res.stderr
    with using_home(home):
        _, run = _run_of("cshapes-again", "1")
    copied, total = (int(x) for x in run.data.params["transfer.tensors"].split("/"))
    assert copied == total and run.data.params["transfer.new"] == "-"
    assert run.data.params["transfer.frozen_tensors"] == "0" and "nothing frozen" in res.stderr

"""Issue 14: `visionloop sweep` on a local Ray (this machine's 2 CPUs), real trainings.

One module-scoped sweep of yolo11n vs yolo11s (2 epochs, 64 px) on ~60 generated images: the
two trials train at the same time, each an MLflow child run under one parent run, the best
by test mAP50-95 is registered as challenger with its card, and the table compares them.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from test_training_pipeline import _env, using_home

NAME = "shapes-sweep"
SWEEP = ["sweep", "--data", "shapes@1", "--models", "yolo11n.yaml,yolo11s.yaml", "--epochs", "2", "--imgsz", "64",
         "--name", NAME]
TRIALS = {"yolo11n.yaml": "yolo11n-64px-lr0.01", "yolo11s.yaml": "yolo11s-64px-lr0.01"}


def _commit_shapes(home, name="shapes", **kw):
    from visionloop.datasets import synthetic
    from visionloop.store import open_store

    with using_home(home):
        return synthetic.commit_generated(open_store(), name, 60, seed=7, size=64, **kw)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    home = tmp_path_factory.mktemp("sweep-home")
    m = _commit_shapes(home)
    assert m.by_split("test"), "the generated data must have a test split"
    res = run_cli(*SWEEP, env=_env(home), cwd=tmp_path_factory.mktemp("sweep-cwd"), timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    return home, res


def _sweep_runs(home):
    from visionloop import registry
    from visionloop.training.sweep import PARENT_RUN_TAG, TAG_SWEEP

    with using_home(home):
        c = registry.client()
        exp = c.get_experiment_by_name(NAME)
        runs = list(c.search_runs([exp.experiment_id]))
        parents = [r for r in runs if r.data.tags.get(TAG_SWEEP) == "parent"]
        children = {p.info.run_id: [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == p.info.run_id]
                    for p in parents}
        history = {r.info.run_id: c.get_metric_history(r.info.run_id, "metrics/mAP50-95") for r in runs}
    return parents, children, history


def test_trials_are_child_runs_that_ran_in_parallel(swept):
    from visionloop.training.sweep import TAG_STOPPED

    home, _ = swept
    parents, children, history = _sweep_runs(home)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    kids = children[parents[0].info.run_id]
    assert sorted(k.data.params["model"] for k in kids) == ["yolo11n.yaml", "yolo11s.yaml"]
    for k in kids:  # a trial either finished its pipeline or was stopped early by ASHA
        assert k.info.status == "FINISHED" or (k.info.status == "KILLED" and TAG_STOPPED in k.data.tags), k.info
        assert k.data.params["lr0"] == "0.01" and k.data.params["optimizer"] == "SGD"
        assert history[k.info.run_id], "every trial logged its per-epoch validation metric"
    assert any(k.info.status == "FINISHED" for k in kids)
    # what each worker recorded: its run's start and its last epoch's metric; the two intervals overlap
    spans = [(k.info.start_time, max(h.timestamp for h in history[k.info.run_id])) for k in kids]
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"trials ran one after the other: {spans}"


def test_best_trial_is_registered_as_challenger_with_its_card(swept):
    from visionloop import registry
    from visionloop.training.sweep import TAG_BEST

    home, res = swept
    parents, children, _ = _sweep_runs(home)
    finished = {k.info.run_id: k for k in children[parents[0].info.run_id] if k.info.status == "FINISHED"}
    with using_home(home):
        version = registry.get_alias(NAME, registry.CHALLENGER)
        assert version is not None
        mv = registry.get_version(NAME, version)
    best = finished[mv.run_id]  # a finished trial's own run, with the highest test mAP50-95 (ties: any)
    assert best.data.metrics["test/map50_95"] == max(k.data.metrics["test/map50_95"] for k in finished.values())
    assert parents[0].data.tags[TAG_BEST] == mv.run_id
    with using_home(home):
        card = registry.get_card(mv)
        resolved = registry.resolve_model(f"{NAME}@challenger")
    assert card.task == "detect" and card.dataset == "shapes@1" and card.imgsz == 64 and card.epochs == 2
    assert card.base_model == best.data.params["model"]
    assert card.eval is not None and card.eval.split == "test"
    assert card.eval.map50_95 == pytest.approx(best.data.metrics["test/map50_95"])
    assert card.parity is not None and card.parity.compared > 0
    assert resolved.onnx_path.is_file()
    assert parents[0].data.tags["visionloop.registered"] == mv.ref
    for k in finished.values():  # measured by the sweep itself, after the trials
        assert k.data.metrics["sweep/latency_ms"] > 0 and k.data.metrics["sweep/onnx_bytes"] > 0
    if len(finished) == 2:  # yolo11s has ~3x the weights of yolo11n
        size = {k.data.params["model"]: k.data.metrics["sweep/onnx_bytes"] for k in finished.values()}
        assert size["yolo11s.yaml"] > 2 * size["yolo11n.yaml"]


def test_table_compares_the_trials(swept):
    _, res = swept
    out = res.stdout
    for label in TRIALS.values():
        assert label in out
    for col in ("mAP50-95", "ONNX ms/img (CPU)", "ONNX MB", "lr0", "imgsz"):
        assert col in out
    assert f"→ {NAME}/1" in out and "challenger" in out


def test_json_rerun_reuses_the_trainings(swept, tmp_path):
    """The same sweep again: trainings come from the step cache; one JSON document on stdout."""
    home, _ = swept
    res = run_cli(*SWEEP, "--json", env=_env(home), cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    doc = json.loads(res.stdout)
    assert doc["metric"] == "map50_95" and doc["registered"] == f"{NAME}/2" and "challenger" in doc["aliases"]
    assert {t["trial"] for t in doc["trials"]} == set(TRIALS.values())
    done = [t for t in doc["trials"] if t["status"] == "FINISHED"]
    assert done and all(t["latency_ms"] > 0 and t["onnx_bytes"] > 0 for t in done)
    assert doc["best"] == max(done, key=lambda t: t["metric"])["trial"]
    _, children, _ = _sweep_runs(home)
    assert len(children) == 2 and all(len(kids) == 2 for kids in children.values())


@pytest.mark.parametrize("args, message", [
    (["--models", "yolo11z-nope.yaml"], "model architecture yolo11z-nope.yaml not found"),
    (["--models", ","], "--models: give at least one value"),
    (["--imgsz", "64,abc"], "--imgsz: '64,abc' is not a comma-separated list of int values"),
    (["--imgsz", "50"], "--imgsz: must be a positive multiple of 32"),
    (["--lr0", "0"], "--lr0: every learning rate must be between 0 and 1"),
    (["--models", "yolo11n-cls.yaml"], "is a classify model but the dataset is a detect dataset"),
    (["--data", "notest@1"], "dataset notest@1 has no test split"),
    (["--data", "missing@1"], "missing"),
])
def test_bad_input_is_one_line_and_starts_nothing(tmp_path, args, message):
    from visionloop import registry
    from visionloop.datasets import synthetic
    from visionloop.datasets.catalog import Catalog, DraftImage
    from visionloop.datasets import images
    from visionloop.datasets.manifest import SplitPolicy
    from visionloop.store import open_store

    home = tmp_path / "home"
    _commit_shapes(home)
    with using_home(home):  # a version with train and val images only
        store = open_store()
        drafts = [DraftImage(store.put_blob(p.data), p.ext, p.width, p.height, s.boxes, source=s.name)
                  for s in synthetic.generate(12, seed=1, size=64) for p in [images.prepare(s.data)]]
        Catalog(store).commit("notest", synthetic.CLASSES, drafts, split_policy=SplitPolicy(ratios=(0.8, 0.2, 0.0)))
    base = dict(zip(SWEEP[1::2], SWEEP[2::2]))
    base.update(dict(zip(args[::2], args[1::2])))
    res = run_cli("sweep", *[x for kv in base.items() for x in kv], env=_env(home), cwd=tmp_path)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    with using_home(home):
        assert registry.client().get_experiment_by_name(NAME) is None  # no parent run, nothing registered

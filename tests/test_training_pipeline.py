"""Issue 5 acceptance: `visionloop train` end to end through the real CLI, real training.

One module-scoped home holds a 2-epoch yolo11n trained from its .yaml on generated shapes;
the tests then check the MLflow run, the registered version, ONNX parity, the cache, --force,
clear failures, Ctrl-C and a run on the real rock-paper-scissors data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import RPS, VISIONLOOP, run_cli

TRAIN = ["train", "--data", "shapes@1", "--model", "yolo11n.yaml", "--epochs", "2", "--imgsz", "160",
         "--device", "cpu", "--name", "shapes-det"]


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "VISIONLOOP_TRACKING_URI",
                                                              "VISIONLOOP_STORE_URL")}
    return {**env, "VISIONLOOP_HOME": str(home)}


@contextmanager
def using_home(home: Path):
    """Point this process's settings (registry, MLflow client) at ``home``."""
    from visionloop.settings import get_settings

    old = os.environ.get("VISIONLOOP_HOME")
    os.environ["VISIONLOOP_HOME"] = str(home)
    get_settings(fresh=True)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("VISIONLOOP_HOME", None)
        else:
            os.environ["VISIONLOOP_HOME"] = old
        get_settings(fresh=True)


def _runs(home: Path) -> list:
    from visionloop import registry

    with using_home(home):
        c = registry.client()
        exps = [e.experiment_id for e in c.search_experiments()]
        return list(c.search_runs(exps)) if exps else []


@pytest.fixture(scope="module")
def shapes_home(tmp_path_factory):
    """A home with shapes@1 (generated) and one `visionloop train` of it already done."""
    home = tmp_path_factory.mktemp("train-home")
    cwd = tmp_path_factory.mktemp("train-cwd")
    env = _env(home)
    synth = run_cli("data", "synth", "--name", "shapes", "--images", "60", "--size", "160", "--seed", "7", env=env)
    assert synth.returncode == 0, synth.stderr
    first = run_cli(*TRAIN, env=env, cwd=cwd)
    assert first.returncode == 0, first.stderr
    return home, cwd, first


def test_train_creates_tracked_run_and_registered_version(shapes_home):
    from visionloop import registry

    home, cwd, first = shapes_home
    assert "## visionloop train: shapes-det version 1" in first.stdout
    assert "models:/shapes-det/1" in first.stdout
    runs = _runs(home)
    assert len(runs) == 1  # ultralytics' own MLflow callback made no second run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["imgsz"] == "160"
    assert run.data.params["batch"] == "16"  # -1 on CPU → the safe size
    assert run.data.tags["visionloop.dataset"] == "shapes@1"
    assert run.data.tags["mlflow.source.git.commit"]
    assert run.data.tags["version.ultralytics"]
    with using_home(home):
        c = registry.client()
        for key in ("metrics/mAP50-95", "metrics/mAP50", "metrics/precision", "metrics/recall", "train/box_loss",
                    "val/cls_loss"):
            assert [m.step for m in c.get_metric_history(run.info.run_id, key)] == [1, 2], key
        artifacts = {a.path for d in ("plots", "weights", "export", "eval", "train")
                     for a in c.list_artifacts(run.info.run_id, d)}
        assert {"step_seconds/train", "step_seconds/export", "step_seconds/evaluate"} <= set(run.data.metrics)
        assert run.data.tags["step.train"] == "done"
        for name in ("plots/results.png", "plots/BoxPR_curve.png", "plots/confusion_matrix.png", "weights/best.pt",
                     "export/model.onnx", "eval/eval.json", "train/train.log", "train/results.csv"):
            assert name in artifacts, name

        mv = registry.get_version("shapes-det", "1")
        assert mv.aliases == ["champion"] and mv.run_id == run.info.run_id
        for tag in ("dataset", "manifest_hash", "imgsz", "task", "git_commit", "cache_key", "metrics.map50",
                    "metrics.map50_95", "metrics.precision", "metrics.recall", "eval.split"):
            assert tag in mv.tags, tag
        assert (mv.tags["dataset"], mv.tags["imgsz"], mv.tags["task"]) == ("shapes@1", "160", "detect")
        assert mv.tags["git_commit"] == run.data.tags["mlflow.source.git.commit"]
        # structured data lives in the card, not in JSON string tags
        assert "classes" not in mv.tags and not any("per_class" in k for k in mv.tags)
        card = registry.get_card(mv)
        assert card.classes == ["circle", "square", "triangle"] and (card.imgsz, card.task) == (160, "detect")
        assert (card.dataset, card.base_model, card.epochs) == ("shapes@1", "yolo11n.yaml", 2)
        assert card.cache_key == run.data.tags["visionloop.cache_key"] == mv.tags["cache_key"]
        assert card.git_commit == run.data.tags["mlflow.source.git.commit"]
        assert card.eval is not None and [c.name for c in card.eval.per_class] == card.classes
        assert card.eval.data == "shapes@1" and card.eval.split == "test"
        assert card.parity is not None and card.parity.compared > 0 and card.parity.min_iou >= 0.99
    # nothing escaped into the working directory (no ./mlflow.db, ./mlruns or ./runs)
    assert sorted(p.name for p in cwd.iterdir()) == []
    assert "train.log" in first.stdout  # the summary says where the trainer's log went
    assert "Epoch" not in first.stderr  # ...and the trainer's own output stayed in it


def test_registered_onnx_matches_pytorch(shapes_home, tmp_path):
    import onnxruntime as ort

    from visionloop import registry
    from visionloop.datasets.catalog import Catalog
    from visionloop.datasets.materialize import materialize
    from visionloop.store import open_store
    from visionloop.evaluation import EvalResult
    from visionloop.training.export import check_parity, read_metadata

    home, _, _ = shapes_home
    with using_home(home):
        r = registry.resolve_model("shapes-det@champion")
        meta = read_metadata(r.onnx_path)
        assert json.loads(meta["classes"]) == r.classes == ["circle", "square", "triangle"]
        assert meta["task"] == "detect" and meta["stride"] == "32" and meta["dataset"] == "shapes@1"
        sess = ort.InferenceSession(str(r.onnx_path), providers=["CPUExecutionProvider"])
        # dynamic batch and size: the server letterboxes to the smallest stride-aligned rectangle
        assert sess.get_inputs()[0].shape[1] == 3
        assert all(isinstance(d, str) for d in sess.get_inputs()[0].shape[2:])
        out = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 96, 160), np.float32)})[0]
        assert out.shape[:2] == (1, 4 + 3)

        best = Path(registry.client().download_artifacts(r.run_id, "weights/best.pt", str(tmp_path)))
        manifest = Catalog(open_store()).load("shapes@1")
        from visionloop.settings import get_settings

        data_yaml = materialize(open_store(), manifest, get_settings().cache_dir)
        test_images = sorted((data_yaml.parent / "images" / "test").iterdir())
        rep = check_parity(best, r.onnx_path, test_images, 160)
        assert rep.compared - rep.ties > 0 and rep.mismatches == []
        assert rep.min_iou >= 0.99 and rep.max_conf_diff <= 0.01

        # What the pipeline recorded is the test split, measured by ultralytics' own validator called
        # here directly on the registered ONNX (evaluate_model's correctness: test_training_evaluate.py).
        recorded = registry.get_card(r.ref).eval
        stored = EvalResult.model_validate_json(
            Path(registry.client().download_artifacts(r.run_id, "eval/eval.json", str(tmp_path))).read_text())
        assert recorded.model_dump(exclude={"data"}) == stored.model_dump(exclude={"data"})
        assert recorded.images == len(manifest.by_split("test")) == len(test_images)
        test_yaml = tmp_path / "test-as-val.yaml"
        test_yaml.write_text(yaml.safe_dump({"path": str(data_yaml.parent), "train": "images/train",
                                             "val": "images/test", "names": dict(enumerate(r.classes))}))
        from ultralytics import YOLO

        ref = YOLO(str(r.onnx_path), task="detect").val(data=str(test_yaml), imgsz=160, batch=1, device="cpu",
                                                        rect=False, plots=False, project=str(tmp_path), verbose=False)
        assert recorded.map50_95 == pytest.approx(float(ref.box.map), abs=1e-6)
        assert recorded.map50 == pytest.approx(float(ref.box.map50), abs=1e-6)
        assert recorded.instances == int(ref.nt_per_class.sum())
        for k, c in enumerate(ref.box.ap_class_index):
            assert recorded.per_class[int(c)].ap50_95 == pytest.approx(float(ref.box.ap[k]), abs=1e-6)
        assert float(r.tags["metrics.map50_95"]) == pytest.approx(recorded.map50_95, abs=1e-4)


def test_same_command_is_cached_and_force_retrains(shapes_home):
    from visionloop import registry

    home, cwd, _ = shapes_home
    env = _env(home)
    again = run_cli(*TRAIN, env=env, cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert "train: cached" in again.stderr and "cached: shapes-det/1" in again.stderr
    assert "**cached**" in again.stdout
    assert len(_runs(home)) == 1  # no new run
    with using_home(home):
        assert [v.version for v in registry.list_versions("shapes-det")] == ["1"]

    forced = run_cli(*TRAIN, "--force", env=env, cwd=cwd)
    assert forced.returncode == 0, forced.stderr
    assert "train: done" in forced.stderr and "cached" not in forced.stderr
    assert len(_runs(home)) == 2
    with using_home(home):
        v2 = registry.get_version("shapes-det", "2")
        assert v2.aliases == ["challenger"]  # champion stays on 1 until promoted
        assert registry.get_alias("shapes-det", "champion") == "1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "missing/yolo11n.pt"], "error: model weights missing/yolo11n.pt not found; pass an existing .pt "
                                            "or an architecture like yolo11n.yaml (trains from scratch); "
                                            "weights cannot be downloaded here"),
        (["--data", "nosuch@1"], "error: dataset 'nosuch' does not exist"),
        (["--epochs", "0"], "error: --epochs: must be at least 1"),
        (["--engine", "ray", "--cpus", "0"], "error: --cpus: must be at least 1"),
        (["--data", ""], "error: --data is required"),
    ],
)
def test_bad_input_is_one_line_and_registers_nothing(shapes_home, args, message):
    from visionloop import registry

    home, cwd, _ = shapes_home
    base = ["train", "--data", "shapes@1", "--model", "yolo11n.yaml", "--epochs", "1", "--imgsz", "160",
            "--device", "cpu", "--name", "bad-model"]
    for flag, value in zip(args[::2], args[1::2]):
        if flag in base:
            base[base.index(flag) + 1] = value
        else:
            base += [flag, value]
    res = run_cli(*base, env=_env(home), cwd=cwd)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert "Traceback" not in res.stderr
    with using_home(home):
        assert "bad-model" not in [m.name for m in registry.list_models()]


def test_failing_step_marks_run_failed(shapes_home):
    """A weights file that exists but is garbage fails inside the train step, after the run began."""
    from visionloop import registry

    home, cwd, _ = shapes_home
    bad = cwd.parent / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    res = run_cli("train", "--data", "shapes@1", "--model", str(bad), "--epochs", "1", "--imgsz", "160",
                  "--device", "cpu", "--name", "broken", env=_env(home), cwd=cwd)
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"cannot load model {bad}" in errors[0], res.stderr
    run = [r for r in _runs(home) if r.data.tags.get("visionloop.model_name") == "broken"][0]
    assert run.info.status == "FAILED"
    assert "cannot load model" in run.data.tags["visionloop.error"]
    with using_home(home):
        assert "broken" not in [m.name for m in registry.list_models()]


def test_ctrl_c_marks_run_killed(shapes_home):
    from visionloop import registry

    home, cwd, _ = shapes_home
    cmd = [*VISIONLOOP, "train", "--data", "shapes@1", "--model", "yolo11n.yaml", "--epochs", "50",
           "--imgsz", "160", "--device", "cpu", "--name", "interrupted"]
    before = set((home / "cache" / "train").glob("*/train.log"))
    proc = subprocess.Popen(cmd, env=_env(home), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            running = [r for r in _runs(home) if r.data.tags.get("visionloop.model_name") == "interrupted"]
            logs = set((home / "cache" / "train").glob("*/train.log")) - before
            if running and any("Starting training" in p.read_text(errors="ignore") for p in logs):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "marked KILLED; nothing was registered" in err
    run = [r for r in _runs(home) if r.data.tags.get("visionloop.model_name") == "interrupted"][0]
    assert run.info.status == "KILLED"
    with using_home(home):
        assert "interrupted" not in [m.name for m in registry.list_models()]


def test_rps_folder_imported_on_the_fly_at_320(tmp_path):
    """The whole rock-paper-scissors export (read in place), imported by `train --data PATH`, one epoch at 320."""
    from visionloop import registry

    home = tmp_path / "home"
    res = run_cli("train", "--data", str(RPS), "--model", "yolo11n.yaml", "--epochs", "1", "--imgsz", "320",
                  "--device", "cpu", "--name", "rps", env=_env(home), cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr
    assert "imported" in res.stderr and "rps@1" in res.stderr
    with using_home(home):
        r = registry.resolve_model("rps@champion")
        assert r.classes == ["paper", "rock", "scissors"] and r.imgsz == 320
        assert r.tags["dataset"] == "rps@1" and r.tags["eval.split"] == "test"
        assert int(r.tags["eval.images"]) == 13  # the source's own test split, all of it
        assert r.onnx_path.stat().st_size > 1_000_000


def test_zip_data_is_imported_on_the_fly(vl_home, tmp_path):
    """`--data some/export.zip` becomes a dataset version named after the zip (same content: same version)."""
    import zipfile

    from visionloop.datasets import synthetic
    from visionloop.datasets.ingest import resolve_or_import

    zpath = tmp_path / "hand signs.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("classes.txt", "\n".join(synthetic.CLASSES) + "\n")
        for s in synthetic.generate(6, seed=3, size=96):
            zf.writestr(f"images/{s.name}", s.data)
            zf.writestr(f"labels/{s.name[:-4]}.txt", "".join(b.to_yolo_line() + "\n" for b in s.boxes))
    m = resolve_or_import(str(zpath), None)
    assert (m.name, m.version, len(m.images), m.classes) == ("hand-signs", 1, 6, synthetic.CLASSES)
    assert resolve_or_import(str(zpath), None).ref == "hand-signs@1"  # unchanged content: no new version
    assert resolve_or_import(str(zpath), 64, "signs").ref == "signs@1"
    assert all(i.width == 64 for i in resolve_or_import("signs@1", None).images)


def _plan_key(model: str, data: str = "keys@1") -> str:
    from visionloop.training.config import build_config
    from visionloop.training.events import NullEvents
    from visionloop.training.pipeline import Pipeline

    cfg = build_config({}, {"data": data, "model": model, "epochs": 1, "imgsz": 64, "device": "cpu", "batch": 4})
    return Pipeline(cfg, NullEvents())._plan().cache.key


def test_cache_key_follows_the_weights_content_not_their_path(vl_home, tmp_path):
    """Same path with new content: a new key (retrains); same content at another path: the same key (cached)."""
    from visionloop.datasets import synthetic
    from visionloop.store import open_store

    synthetic.commit_generated(open_store(), "keys", 12, seed=2, size=64)
    a, b = tmp_path / "a" / "base.pt", tmp_path / "b" / "other.pt"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_bytes(b"weights one")
    first = _plan_key(str(a))
    b.write_bytes(b"weights one")
    assert _plan_key(str(b)) == first  # moved or copied: still cached
    a.write_bytes(b"weights two")
    assert _plan_key(str(a)) != first  # overwritten in place: retrains
    # a local architecture .yaml keys on its text (and name: it carries the scale)
    y = tmp_path / "yolo11n.yaml"
    y.write_text(yaml.safe_dump({"nc": 3}))
    k1 = _plan_key(str(y))
    y.write_text(yaml.safe_dump({"nc": 4}))
    assert _plan_key(str(y)) != k1
    assert _plan_key("yolo11n.yaml") != _plan_key("yolo11s.yaml")


def test_code_version_covers_materialize_and_manifest(monkeypatch, tmp_path):
    import shutil

    from visionloop.training import cache

    pkg = tmp_path / "visionloop"
    shutil.copytree(cache._PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "_PKG", pkg)
    before = cache.code_version()
    assert cache.ultralytics_version() in before
    for rel in ("datasets/materialize.py", "datasets/manifest.py", "training/trainer.py"):
        f = pkg / rel
        f.write_text(f.read_text() + "\n# changed\n")
        after = cache.code_version()
        assert after != before, rel
        before = after
    (pkg / "serving" / "app.py").write_text("# serving does not change a training\n")
    assert cache.code_version() == before


def test_data_name_never_means_a_folder_in_the_current_directory(tmp_path, monkeypatch):
    from visionloop.datasets.ingest import is_import_source

    (tmp_path / "shapes").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not any(is_import_source(s) for s in ("shapes", "shapes@2", "rps.v2"))
    assert all(is_import_source(s) for s in ("./shapes", "/abs/shapes", "exports/x", "x.zip", "s3://b/x.zip",
                                             "data.yaml", "~/x"))

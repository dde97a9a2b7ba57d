"""Shared fixtures: an isolated VISIONLOOP_HOME, the CLI as a subprocess, a tiny trained model.

Everything heavy is session-scoped and built here from a ``.yaml`` (no downloads): one tiny
YOLO trained from scratch on generated shapes and exported to ONNX, reused by every test that
only needs *a* real model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RPS = SHARED / "datasets" / "rock-paper-scissors"
VISIONLOOP = [sys.executable, "-m", "visionloop"]


@pytest.fixture(scope="session", autouse=True)
def _ultralytics_sandbox(tmp_path_factory):
    """Keep ultralytics' settings and runs out of the user's home; never go online."""
    cfg = tmp_path_factory.mktemp("ultralytics-config")
    os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield


@pytest.fixture
def vl_home(tmp_path, monkeypatch) -> Path:
    """A fresh VISIONLOOP_HOME for one test (store, MLflow DB and caches inside)."""
    home = tmp_path / "vlhome"
    monkeypatch.setenv("VISIONLOOP_HOME", str(home))
    monkeypatch.delenv("VISIONLOOP_STORE_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VISIONLOOP_TRACKING_URI", raising=False)
    from visionloop.settings import get_settings

    get_settings(fresh=True)
    yield home
    get_settings(fresh=True)


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``visionloop ARGS`` as a user would: a real process, its exit code and output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*VISIONLOOP, *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd
    )


@pytest.fixture
def cli():
    return run_cli


@dataclass(frozen=True)
class TinyModel:
    pt: Path
    onnx: Path
    data_yaml: Path
    classes: list[str]
    imgsz: int
    test_images: list[Path]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    """yolo11n trained from scratch for a few epochs on generated shapes, exported to ONNX."""
    from ultralytics import YOLO

    from visionloop.datasets import synthetic
    from visionloop.datasets.materialize import materialize
    from visionloop.store import Store

    base = tmp_path_factory.mktemp("tiny-model")
    store = Store(str(base / "store"))
    manifest = synthetic.commit_generated(store, "tiny", 80, seed=7, size=160)
    data_yaml = materialize(store, manifest, base / "cache")
    model = YOLO("yolo11n.yaml")
    model.train(data=str(data_yaml), epochs=3, imgsz=160, device="cpu", batch=16, workers=0,
                project=str(base / "runs"), name="t", exist_ok=True, verbose=False, plots=False)
    best = base / "runs" / "t" / "weights" / "best.pt"
    onnx = Path(YOLO(str(best)).export(format="onnx", imgsz=160, simplify=True))
    test_dir = data_yaml.parent / "images" / "test"
    return TinyModel(best, onnx, data_yaml, list(synthetic.CLASSES), 160, sorted(test_dir.iterdir()))


@pytest.fixture(scope="session")
def tiny_dynamic_onnx(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported with dynamic batch and size (``tiny_model.onnx`` is static, batch 1)."""
    import shutil

    from ultralytics import YOLO

    pt = tmp_path_factory.mktemp("tiny-dynamic") / "dyn.pt"  # export writes beside the .pt
    shutil.copy(tiny_model.pt, pt)
    return Path(YOLO(str(pt)).export(format="onnx", imgsz=tiny_model.imgsz, dynamic=True, simplify=True))

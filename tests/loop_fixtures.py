"""Helpers shared by the promotion and loop tests: an isolated home for a whole module, a
generated dataset, real training through the pipeline, and a real server process."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from visionloop.datasets import images, synthetic
from visionloop.datasets.catalog import Catalog, DraftImage
from visionloop.demo import ServerProcess

IMGSZ = 96


@contextmanager
def isolated_home(path: Path):
    """VISIONLOOP_HOME for several tests at once (the conftest fixture is per test)."""
    from visionloop.settings import get_settings

    keys = ("VISIONLOOP_HOME", "VISIONLOOP_STORE_URL", "MLFLOW_TRACKING_URI", "VISIONLOOP_TRACKING_URI")
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys[1:]:
        os.environ.pop(k, None)
    os.environ["VISIONLOOP_HOME"] = str(path)
    get_settings(fresh=True)
    try:
        yield path
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings(fresh=True)


def make_dataset(name: str, n: int, seed: int, size: int = IMGSZ):
    from visionloop.store import open_store

    store = open_store()
    drafts = []
    for s in synthetic.generate(n, seed=seed, size=size):
        p = images.prepare(s.data)
        drafts.append(DraftImage(store.put_blob(p.data), p.ext, p.width, p.height, s.boxes, source=s.name))
    return Catalog(store).commit(name, synthetic.CLASSES, drafts).manifest


def train(data: str, name: str, epochs: int, seed: int = 0, batch: int = 8) -> str:
    """The real pipeline (train, export, parity, evaluate, register); returns the version."""
    from rich.console import Console

    from visionloop.training.config import build_config
    from visionloop.training.pipeline import run_pipeline

    cfg = build_config({}, {"data": data, "name": name, "model": "yolo11n.yaml", "epochs": epochs, "imgsz": IMGSZ,
                            "device": "cpu", "batch": batch, "seed": seed})
    return run_pipeline(cfg, Console(stderr=True, quiet=True)).version


class Server(ServerProcess):
    """The demo's server process helper, started and ready."""

    def __init__(self, args: list[str], log: Path):
        super().__init__(args, log)
        self.wait_ready(120)

"""Helpers shared by the promotion and loop tests: an isolated home for a whole module, a
generated dataset, real training through the pipeline, and a real server process."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import serving_helpers

from visionloop.datasets import synthetic

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

    return synthetic.commit_generated(open_store(), name, n, seed=seed, size=size)


def train(data: str, name: str, epochs: int, seed: int = 0, batch: int = 8) -> str:
    """The real pipeline (train, export, parity, evaluate, register); returns the version."""
    from visionloop.training.config import build_config
    from visionloop.training.events import NullEvents
    from visionloop.training.pipeline import run_pipeline

    cfg = build_config({}, {"data": data, "name": name, "model": "yolo11n.yaml", "epochs": epochs, "imgsz": IMGSZ,
                            "device": "cpu", "batch": batch, "seed": seed})
    return run_pipeline(cfg, NullEvents()).version


class Server(serving_helpers.Server):
    """``visionloop serve ARGS`` (models given in ARGS), started and ready; answers which version
    it serves."""

    def __init__(self, args: list[str], log: Path):
        super().__init__([], log.parent, *args)

    def version(self, model: str) -> str | None:
        return next((m.get("version") for m in self.client.get("/v1/models").json()["models"] if m["name"] == model),
                    None)

    def wait_version(self, model: str, version: str, timeout: float = 60) -> str | None:
        """Poll until the server answers with ``version`` (a hot swap) or the time is up."""
        deadline = time.monotonic() + timeout
        while (got := self.version(model)) != version and time.monotonic() < deadline:
            time.sleep(0.3)
        return got

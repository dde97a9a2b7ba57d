"""Helpers for the capture and feedback tests: a tiny constant ONNX detector and the app in-process."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from serving_helpers import constant_model

CLASSES = ["cat", "dog"]


def detector(path: Path) -> Path:
    """An end2end detector that always answers a 0.4 cat and a 0.9 dog (64x64 input)."""
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [16, 24, 48, 40, 0.9, 1]
    rows[0, 1] = [0, 0, 8, 8, 0.4, 0]
    return constant_model(path, rows, {"names": "{0: 'cat', 1: 'dog'}", "imgsz": "[64, 64]", "task": "detect",
                                       "end2end": "True", "stride": "32"})


def png(value: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A flat grey PNG (``value`` 0..255); a different value is a different image."""
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def metric(client, name: str, **labels: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@contextmanager
def serving(config) -> Iterator:
    """The app in-process (TestClient), ready; yields (client, state)."""
    from starlette.testclient import TestClient

    from visionloop.serving.app import create_app

    app = create_app(config)
    with TestClient(app) as client:
        assert wait_for(lambda: client.get("/ready").status_code == 200, 60), client.get("/v1/models").text
        yield client, app.state.vl

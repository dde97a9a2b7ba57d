"""The training image (slow: torch and ultralytics, built offline like the serving image).

`docker run ... visionloop data synth` and `... train` on generated data register a model in a
mounted home; the host then serves that version from the same home with its own CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_cli
from docker_helpers import docker, offline_image
from serving_helpers import Server

pytestmark = pytest.mark.slow

USER = "10001"  # the image's user


@pytest.fixture(scope="module")
def train_image():
    image = offline_image("train")
    yield image
    # about 7 GB (PyPI's torch carries CUDA): give the disk back, the base image stays cached
    docker("rmi", image.tag, check=False)
    docker("image", "prune", "-f", check=False)


def _run_in(image: str, home: Path, *args: str) -> str:
    # the home at the same path inside and out: MLflow stores absolute artifact paths
    proc = docker("run", "--rm", "--network", "none", "-v", f"{home}:{home}", "-e", f"VISIONLOOP_HOME={home}",
                  image, *args, timeout=900)
    return proc.stdout + proc.stderr


def test_train_image_registers_a_model_in_a_mounted_home(train_image, tmp_path):
    listed = docker("run", "--rm", "--entrypoint", "pip", train_image.tag, "list").stdout.lower()
    assert "ultralytics" in listed and "torch" in listed
    assert docker("run", "--rm", "--entrypoint", "id", train_image.tag, "-u").stdout.strip() == USER

    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, int(USER), int(USER))
    _run_in(train_image.tag, home, "data", "synth", "--name", "shapes", "--images", "40", "--seed", "0",
            "--size", "96")
    out = _run_in(train_image.tag, home, "train", "--data", "shapes@latest", "--model", "yolo11n.yaml",
                  "--epochs", "1", "--imgsz", "64", "--device", "cpu", "--name", "boxed")
    assert "boxed" in out and "Traceback" not in out

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VISIONLOOP_", "MLFLOW_"))}
    env["VISIONLOOP_HOME"] = str(home)
    listing = run_cli("models", "list", env=env)
    assert listing.returncode == 0 and "boxed" in listing.stdout, listing.stdout + listing.stderr
    show = run_cli("models", "show", "boxed/1", env=env)
    assert show.returncode == 0 and "map50_95" in show.stdout and "parity:" in show.stdout, show.stdout + show.stderr

    srv = Server(["boxed/1"], tmp_path, env=env)  # the host serves what the container trained
    try:
        models = srv.client.get("/v1/models").json()["models"]
        assert models[0]["version"] == "1" and models[0]["classes"] == ["circle", "square", "triangle"]
    finally:
        srv.stop()

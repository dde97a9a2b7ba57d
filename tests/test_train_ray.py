"""`visionloop train --engine ray`: the pipeline as a Ray task, on a local Ray and on a real
two-node cluster (``ray start`` processes on 127.0.0.1) with the store on an S3-compatible
server and MLflow as an ``mlflow server`` process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import VISIONLOOP, run_cli

pytestmark = pytest.mark.slow

TRAIN = ["train", "--data", "shapes@1", "--epochs", "2", "--imgsz", "64", "--device", "cpu", "--engine", "ray"]


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "VISIONLOOP_TRACKING_URI",
                                                              "VISIONLOOP_STORE_URL", "RAY_ADDRESS")}
    return {**env, "VISIONLOOP_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", **extra}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("ray-home")
    r = run_cli("data", "synth", "--name", "shapes", "--images", "40", "--size", "64", "--seed", "3", env=_env(home))
    assert r.returncode == 0, r.stderr
    return home


def _runs(home: Path, env: dict | None = None) -> list:
    from visionloop import registry
    from visionloop.settings import Settings, use_settings

    with use_settings(Settings(home=home, **(env or {}))):
        c = registry.client()
        exps = [e.experiment_id for e in c.search_experiments()]
        return list(c.search_runs(exps)) if exps else []


@pytest.mark.parametrize(("extra", "message"), [
    ({}, "error: RAY_ADDRESS=127.0.0.1:1: the store {home}/store is a path on this machine, which the cluster's "
         "workers cannot read; set VISIONLOOP_STORE_URL=s3://BUCKET/PREFIX (nothing was submitted)"),
    ({"VISIONLOOP_STORE_URL": "s3://bucket/store"},
     "error: RAY_ADDRESS=127.0.0.1:1: the tracking URI sqlite:///{home}/mlflow.db is local to this machine; "
     "set MLFLOW_TRACKING_URI=http://HOST:PORT (an mlflow server) (nothing was submitted)"),
])
def test_a_remote_cluster_needs_a_shared_store_and_tracking_server(tmp_path, extra, message):
    """Checked before Ray is even contacted: nothing listens on 127.0.0.1:1."""
    h = tmp_path / "h"
    started = time.monotonic()
    r = run_cli(*TRAIN, env=_env(h, RAY_ADDRESS="127.0.0.1:1", **extra))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == message.format(home=h)
    print(f"refused in {time.monotonic() - started:.1f} s")


def test_train_on_a_local_ray_registers_like_local(home):
    r = run_cli(*TRAIN, "--name", "ray-local", env=_env(home))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "submitted to a local Ray (1 CPU, 0 GPU)" in r.stderr
    for step in ("materialize", "train", "export", "evaluate", "register"):  # the worker's steps, replayed here
        assert re.search(rf"✓ {step}: done", r.stderr), step
    assert "ray-local/1" in r.stdout
    run = next(x for x in _runs(home) if x.data.tags.get("visionloop.model_name") == "ray-local")
    assert run.info.status == "FINISHED" and run.data.params["engine"] == "local"  # the worker's own pipeline
    from visionloop import registry
    from visionloop.settings import Settings, use_settings

    with use_settings(Settings(home=home)):
        assert registry.get_alias("ray-local", "champion") == "1"


def test_ctrl_c_cancels_the_ray_task_and_marks_the_run_killed(home, tmp_path):
    err = tmp_path / "err.log"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([*VISIONLOOP, *TRAIN, "--epochs", "300", "--name", "ray-killed"], stderr=fh,
                                stdout=subprocess.DEVNULL, env=_env(home))
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # until the worker is training
            text = err.read_text(errors="replace")
            if "MLflow run" in text and ("epoch" in text.lower() or "✓ materialize" in text):
                break
            time.sleep(0.5)
        time.sleep(3)  # inside the epochs
        proc.send_signal(signal.SIGINT)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text(errors="replace")
    assert code != 0 and "cancelled the Ray task" in text, text[-3000:]
    runs = [x for x in _runs(home) if x.data.tags.get("visionloop.model_name") == "ray-killed"]
    assert [x.info.status for x in runs] == ["KILLED"], text[-3000:]
    from visionloop import registry
    from visionloop.settings import Settings, use_settings

    with use_settings(Settings(home=home)):
        assert "ray-killed" not in [m.name for m in registry.list_models()]


def test_train_on_a_two_node_cluster_with_s3_store_and_mlflow_server(tmp_path):
    """The acceptance setup: `ray start --head` + a second node, the store on moto's S3, MLflow as
    an `mlflow server` whose artifacts go to that S3; then `serve NAME@champion` serves the result."""
    import numpy as np
    from mlflow_s3_helpers import MlflowServer, MotoServer
    from ray_helpers import RayCluster
    from serving_helpers import Server, jpeg_bytes

    s3 = MotoServer(tmp_path)
    mlflow_srv = cluster = None
    try:
        mlflow_srv = MlflowServer(tmp_path, artifacts=f"s3://{s3.bucket}/mlflow", env=s3.env()).start()
        cluster = RayCluster(tmp_path, nodes=2, cpus_per_node=1)
        env = _env(tmp_path / "client-home", **s3.env(), VISIONLOOP_STORE_URL=f"s3://{s3.bucket}/store",
                   MLFLOW_TRACKING_URI=mlflow_srv.uri, **cluster.client_env())
        r = run_cli("data", "synth", "--name", "shapes", "--images", "40", "--size", "64", "--seed", "3", env=env)
        assert r.returncode == 0, r.stderr
        r = run_cli(*TRAIN, "--name", "ray-cluster", env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"submitted to the Ray cluster at {cluster.address} (1 CPU, 0 GPU)" in r.stderr
        assert re.search(r"✓ train: done", r.stderr) and "ray-cluster/1" in r.stdout

        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=mlflow_srv.uri, registry_uri=mlflow_srv.uri)
        exp = c.get_experiment_by_name("ray-cluster")
        (run,) = c.search_runs([exp.experiment_id])
        assert run.info.status == "FINISHED"
        assert len(c.get_metric_history(run.info.run_id, "train/box_loss")) == 2  # per epoch, from the worker
        assert c.get_model_version_by_alias("ray-cluster", "champion").version == "1"
        keys = s3.keys("mlflow/")
        assert any(k.endswith("model/model.onnx") for k in keys) and any(k.endswith("card.json") for k in keys)
        assert any(k.startswith("store/datasets/shapes/") for k in s3.keys("store/"))

        srv = Server(["ray-cluster@champion"], tmp_path, env={k: v for k, v in env.items() if k != "RAY_ADDRESS"})
        try:
            models = srv.client.get("/v1/models").json()["models"]
            assert models[0]["version"] == "1" and models[0]["alias"] == "champion"
            img = jpeg_bytes(np.full((64, 64, 3), 120, np.uint8))
            assert srv.client.post("/v1/models/ray-cluster/predict", files={"file": ("a.jpg", img)}).status_code == 200
        finally:
            srv.stop()
    finally:
        if cluster is not None:
            cluster.stop()
        if mlflow_srv is not None:
            mlflow_srv.stop()
        s3.stop()

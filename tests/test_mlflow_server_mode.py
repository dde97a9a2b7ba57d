"""Issue 14, item 3: the same commands against a real ``mlflow server`` whose artifacts go to S3.

Every component is a real process on 127.0.0.1: a moto S3 server (the visionloop store at
``s3://B/store``, MLflow's artifacts at ``s3://B/mlflow``), ``mlflow server`` with SQLite behind
it, the CLI, ``visionloop serve --watch``. The MLflow client is proxied (``--artifacts-destination``:
uploads go through the server); a second test checks the direct mode (``--default-artifact-root
s3://``, the client writes to S3 itself). Trainings are tiny classifiers (64 px, 2 epochs).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from mlflow_s3_helpers import MlflowServer, MotoServer
from serving_helpers import Server, constant_model, free_port
from test_watcher_faults import AUTH, Load, models, wait_for

NAME = "cs"
TRAIN = ["train", "--data", "cs@1", "--epochs", "2", "--imgsz", "64", "--device", "cpu", "--name", NAME]
UNREACHABLE = "cannot reach the MLflow tracking server at"


@dataclass
class Stack:
    moto: MotoServer
    mlflow: MlflowServer
    env: dict[str, str]
    home: Path
    train: list  # the CompletedProcess of each `visionloop train`

    def cli(self, *args: str, **extra: str):
        return run_cli(*args, env={**self.env, **extra}, timeout=600)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow.uri, registry_uri=self.mlflow.uri)

    def champion(self) -> str:
        return str(self.client().get_registered_model(NAME).aliases["champion"])


def _env(home: Path, moto: MotoServer, uri: str) -> dict[str, str]:
    """The process environment with everything pointed at the stack (MLflow's retry knobs unset:
    the CLI's bounded defaults are what is under test)."""
    drop = ("VISIONLOOP_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, **moto.env(), "VISIONLOOP_HOME": str(home), "MLFLOW_TRACKING_URI": uri,
            "VISIONLOOP_STORE_URL": f"s3://{moto.bucket}/store"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """moto + mlflow server (artifacts proxied to S3), a generated dataset in the S3 store, two trainings."""
    tmp = tmp_path_factory.mktemp("server-mode")
    moto = MotoServer(tmp)
    server = MlflowServer(tmp, artifacts=f"s3://{moto.bucket}/mlflow", env=moto.env())
    try:
        server.start()
        s = Stack(moto, server, _env(tmp / "vlhome", moto, server.uri), tmp / "vlhome", [])
        synth = s.cli("data", "synth", "--name", "cs", "--task", "classify", "--images", "45", "--size", "64",
                      "--seed", "3")
        assert synth.returncode == 0, synth.stderr
        for seed in ("0", "1"):  # two versions (another seed: another cache key, another run)
            res = s.cli(*TRAIN, "--seed", seed)
            assert res.returncode == 0, res.stderr
            s.train.append(res)
        yield s
    finally:
        server.stop()
        moto.stop()


def test_train_logs_to_the_server_with_artifacts_and_dataset_in_s3(stack):
    c = stack.client()
    mvs = sorted(c.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))
    assert [v.version for v in mvs] == ["1", "2"]
    assert stack.champion() == "1" and str(c.get_registered_model(NAME).aliases["challenger"]) == "2"
    keys = stack.moto.keys()
    assert any(k.startswith("store/") for k in keys)  # the dataset's blobs and manifest
    for mv in mvs:
        run = c.get_run(mv.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["visionloop.dataset"] == "cs@1"
        assert [m.step for m in c.get_metric_history(mv.run_id, "metrics/accuracy_top1")] == [1, 2]
        assert [m.step for m in c.get_metric_history(mv.run_id, "train/loss")] == [1, 2]
        # proxied through the server, stored in the bucket
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/") and mv.source.startswith("mlflow-artifacts:/")
        for name in ("model/model.onnx", "model/card.json", "export/model.onnx", "eval/eval.json"):
            assert any(k.startswith("mlflow/") and k.endswith(f"{mv.run_id}/artifacts/{name}") for k in keys), name
    # nothing went to local disk: no SQLite DB, no artifacts beside the CLI's home or the server
    assert not (stack.home / "mlflow.db").exists() and not (stack.home / "mlartifacts").exists()
    assert not (stack.mlflow.root / "artifacts").exists()
    assert f"models:/{NAME}/2" in stack.train[1].stdout


def test_models_commands_compare_promote_rollback_against_the_server(stack):
    listed = stack.cli("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    row = next(m for m in json.loads(listed.stdout) if m["name"] == NAME)
    assert row["latest_version"] == "2" and row["aliases"] == {"champion": "1", "challenger": "2"}
    assert row["task"] == "classify" and "top1" in row["champion_metrics"]

    shown = stack.cli("models", "show", f"{NAME}@challenger", "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["version"] == "2" and detail["card"]["classes"] == ["circle", "square", "triangle"]
    assert detail["card"]["imgsz"] == 64 and detail["card"]["dataset"] == "cs@1"

    cmp = stack.cli("models", "compare", f"{NAME}@champion", f"{NAME}/2", "--json")
    assert cmp.returncode == 0, cmp.stderr
    body = json.loads(cmp.stdout)
    assert body["data"] == "cs@1" and body["split"] == "test" and body["images"] > 0 and body["rows"]

    up = stack.cli("models", "promote", f"{NAME}/2", "--force")
    assert up.returncode == 0, up.stderr
    assert f"{NAME}@champion: 1 -> 2" in up.stdout and stack.champion() == "2"
    back = stack.cli("models", "rollback", NAME)
    assert back.returncode == 0, back.stderr
    assert "2 -> 1" in back.stdout and stack.champion() == "1"
    none_left = stack.cli("models", "rollback", NAME)
    assert none_left.returncode != 0 and len(none_left.stderr.strip().splitlines()) == 1
    assert "no previous champion" in none_left.stderr and stack.champion() == "1"


def test_the_watcher_follows_the_server_and_outlives_a_30s_outage(stack, tmp_path):
    assert stack.champion() == "1"
    srv = Server([f"{NAME}@champion"], tmp_path, "--watch", "1", env=stack.env)
    try:
        with Load(srv.url, NAME, gap=0.1) as load:
            assert models(srv)["version"] == "1"
            up = stack.cli("models", "promote", f"{NAME}/2", "--force")  # an alias moved in the server
            assert up.returncode == 0, up.stderr
            wait_for("the swap to 2", lambda: models(srv)["version"] == "2", 60)

            stack.mlflow.stop()
            down = time.monotonic()
            status = wait_for("the outage reported", lambda: (m := models(srv))["watch_errors"] >= 2 and m, 60)
            assert status["version"] == "2" and status["state"] == "ready"
            assert UNREACHABLE in status["last_error"] and stack.mlflow.uri in status["last_error"]
            refused = srv.client.post(f"/v1/models/{NAME}/reload", headers=AUTH)
            assert refused.status_code == 503 and UNREACHABLE in refused.json()["error"]["message"]
            time.sleep(max(0.0, 30 - (time.monotonic() - down)))  # the outage lasts 30 s
            errors = models(srv)["watch_errors"]

            stack.mlflow.start()  # the same port, the same database
            back = stack.cli("models", "rollback", NAME)  # and the alias moves again
            assert back.returncode == 0, back.stderr
            wait_for("the swap back to 1", lambda: models(srv)["version"] == "1", 60)
            time.sleep(0.5)  # a few requests on it
        load.check(["1", "2", "1"])  # every request answered, through the outage
        assert any(v == "2" and t > down + 29 for t, _, v in load.log), "no request served during the outage"
        status = models(srv)
        assert status["last_error"] is None and status["watch_errors"] >= errors >= 2
        assert srv.metric("visionloop_model_swaps_total", model=NAME) == 2
    finally:
        srv.stop()
        if stack.mlflow.proc.poll() is not None:  # failed mid-outage: the next tests need it
            stack.mlflow.start()


def test_an_unreachable_server_is_one_line_after_a_bounded_retry(stack):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["models", "list"], TRAIN):
        res = stack.cli(*args, MLFLOW_TRACKING_URI=dead)
        assert res.returncode == 1, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and f"{UNREACHABLE} {dead}: connection refused" in lines[-1], res.stderr
        assert "(3 tries)" in lines[-1]  # bounded: not MLflow's default 7 retries over ~4 minutes
        assert "Traceback" not in res.stderr and sum(UNREACHABLE in line for line in lines) == 1
        if args[0] == "models":
            assert len(lines) == 1, res.stderr
    # nothing was registered anywhere: the live server still holds the two versions
    assert len(stack.client().search_model_versions(f"name = '{NAME}'")) == 2


class _Busy(http.server.BaseHTTPRequestHandler):
    """Answers every request 503 (an overloaded or half-started server behind a proxy)."""

    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


def test_a_server_that_answers_503_or_never_is_one_line_without_its_password(stack):
    busy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    threading.Thread(target=busy.serve_forever, daemon=True).start()
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        cases = [(f"http://user:s3cret@127.0.0.1:{busy.server_port}", {}, "it answered HTTP 503 (3 tries)"),
                 (f"http://127.0.0.1:{silent.getsockname()[1]}", {"MLFLOW_HTTP_REQUEST_TIMEOUT": "1"},
                  "no answer within 1 s (3 tries)")]
        for uri, extra, reason in cases:
            res = stack.cli("models", "list", MLFLOW_TRACKING_URI=uri, **extra)
            assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
            assert UNREACHABLE in res.stderr and reason in res.stderr, res.stderr
            assert "s3cret" not in res.stderr and "user" not in res.stderr
    finally:
        busy.shutdown()
        busy.server_close()
        silent.close()


def test_direct_s3_artifacts_register_and_resolve(stack, tmp_path, monkeypatch):
    """``--default-artifact-root s3://… --no-serve-artifacts``: the client writes to S3 itself
    (MLFLOW_S3_ENDPOINT_URL) and the server only records where."""
    from visionloop import registry
    from visionloop.settings import get_settings

    root = tmp_path / "direct"
    root.mkdir()
    direct = MlflowServer(root, artifacts=f"s3://{stack.moto.bucket}/direct", env=stack.moto.env(), proxied=False)
    direct.start()
    try:
        # the HTTP knobs too: registry.client() sets their defaults, and monkeypatch undoes them
        env = {**stack.moto.env(), "VISIONLOOP_HOME": str(tmp_path / "h"), "MLFLOW_TRACKING_URI": direct.uri,
               "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("VISIONLOOP_TRACKING_URI", raising=False)
        get_settings(fresh=True)
        run = registry.client().create_run(registry.experiment_id("direct"))
        onnx = constant_model(tmp_path / "m.onnx", np.array([[0.1, 0.7, 0.2]], np.float32),
                              {"names": "{0: 'a', 1: 'b', 2: 'c'}", "imgsz": "[64, 64]", "task": "classify"})
        card = registry.ModelCard(task="classify", classes=["a", "b", "c"], imgsz=64)
        mv = registry.register_version("direct", run.info.run_id, onnx, card)
        assert mv.source.startswith(f"s3://{stack.moto.bucket}/direct/")
        keys = stack.moto.keys("direct/")
        assert {"/".join(k.split("/")[-2:]) for k in keys} == {"model/model.onnx", "model/card.json"}
        assert all(k.startswith(f"direct/{run.info.experiment_id}/{run.info.run_id}/") for k in keys), keys
        resolved = registry.resolve_model("direct@champion")
        assert resolved.onnx_path.read_bytes() == onnx.read_bytes() and resolved.classes == ["a", "b", "c"]
    finally:
        direct.stop()
        get_settings(fresh=True)

"""The watcher never dies: registry outages, models that fail warm-up, bugs in its own round.

The registry outage runs a real ``mlflow server`` on 127.0.0.1 and stops it: a SQLite file moved
away is no outage for a process that has it open (its pooled connections keep reading the moved
file), and a server exercises the client's real network path (connection refused, retries).
Models are tiny constant classifiers, so no training is needed.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlflow_s3_helpers import MlflowServer
from serving_helpers import TOKEN, Server, constant_model

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLASSES = ["a", "b", "c", "d"]
META = {"names": "{0: 'a', 1: 'b', 2: 'c', 3: 'd'}", "imgsz": "[64, 64]", "task": "classify"}


@functools.cache
def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 100, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def good_model(path: Path, top: int) -> Path:
    """A classifier that always answers class ``top`` (so each version is recognisable)."""
    probs = np.full((1, 4), 0.1, np.float32)
    probs[0, top] = 0.7
    return constant_model(path, probs, META)


def wrong_shape_model(path: Path) -> Path:
    """Loads, runs, but answers 3 scores for 4 classes: refused by the warm-up's output check."""
    return constant_model(path, np.full((1, 3), 0.3, np.float32), META)


def failing_model(path: Path) -> Path:
    """A valid ONNX that loads but raises inside onnxruntime at run time (index 7 of 3 channels)."""
    return constant_model(path, np.full((1, 4), 0.25, np.float32), META, channel=7)


def register(name: str, path: Path) -> str:
    from visionloop import registry

    run = registry.client().create_run(registry.experiment_id("watch-test"))
    card = registry.ModelCard(task="classify", classes=CLASSES, imgsz=64)
    return registry.register_version(name, run.info.run_id, path, card).version


class Load:
    """Light, bounded load: one client, a request every ``gap`` s, at most ``limit`` requests."""

    def __init__(self, url: str, model: str, gap: float = 0.05, limit: int = 3000):
        self.url, self.model, self.gap, self.limit = url, model, gap, limit
        self.log: list[tuple[float, object, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self._stop.is_set() and len(self.log) < self.limit:
                try:
                    r = c.post(f"/v1/models/{self.model}/predict", files={"file": ("a.png", _png())})
                    self.log.append((time.monotonic(), r.status_code, r.json().get("version")))
                except Exception as exc:  # a lost request: recorded, asserted by the test
                    self.log.append((time.monotonic(), repr(exc), None))
                self._stop.wait(self.gap)

    def check(self, versions: list[str]) -> None:
        """Every request answered 200, by ``versions`` in this order (the swap seen, never undone)."""
        assert len(self.log) > 20, f"only {len(self.log)} requests made"
        failed = [row for row in self.log if row[1] != 200]
        assert not failed, f"{len(failed)} of {len(self.log)} requests failed, e.g. {failed[:3]}"
        seen = [v for *_, v in self.log]
        runs = [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]]
        assert runs == versions, runs


def models(srv: Server) -> dict:
    return srv.client.get("/v1/models").json()["models"][0]


def wait_for(what: str, cond, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s")


def wait_polls(srv: Server, n: int = 2, timeout: float = 20) -> None:
    """Let the watcher poll at least ``n`` more times (last_check_at has 1 s resolution)."""
    seen = {models(srv)["last_check_at"]}

    def more() -> bool:
        seen.add(models(srv)["last_check_at"])
        return len(seen) > n

    wait_for(f"{n} watcher polls", more, timeout, 0.2)


# -- in-process: poll cost, pin, a bug in the watcher's own round ------------------------------
@pytest.fixture
def manager_for(vl_home):
    from visionloop.serving.manager import ModelManager, RuntimeOptions
    from visionloop.serving.metrics import Metrics
    from visionloop.serving.sources import parse_spec

    made = []

    def make(*refs: str) -> ModelManager:
        m = ModelManager([parse_spec(r) for r in refs], RuntimeOptions(1, False), Metrics())
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


def test_a_poll_costs_a_registry_call_and_no_hash(manager_for, tmp_path, monkeypatch):
    import mlflow

    from visionloop import registry
    from visionloop.registry import artifacts
    from visionloop.serving import sources

    v1, v2 = (register("m", good_model(tmp_path / f"v{i}.onnx", i)) for i in (1, 2))
    hashes, downloads = [], []
    real_hash, real_download = artifacts.sha256_file, mlflow.artifacts.download_artifacts
    monkeypatch.setattr(artifacts, "sha256_file", lambda p: hashes.append(p) or real_hash(p))
    monkeypatch.setattr(sources, "sha256_file", lambda p: hashes.append(p) or real_hash(p))
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts",
                        lambda **kw: downloads.append(kw) or real_download(**kw))

    mgr = manager_for("m@champion")
    mgr.load_all()
    assert mgr.get("m").version == v1 and (len(downloads), len(hashes)) == (1, 1)  # verified once on download
    for _ in range(5):
        assert mgr.poll() is True
    assert (len(downloads), len(hashes)) == (1, 1), "a poll of an unmoved alias downloaded or hashed"
    assert models_status(mgr)["last_check_at"]

    registry.set_alias("m", "champion", v2)
    assert mgr.poll() and mgr.get("m").version == v2 and (len(downloads), len(hashes)) == (2, 2)

    pinned = mgr.reload("m", version=v1)  # back to a cached version: its stamp spares the hash
    assert pinned.swapped and pinned.pinned and mgr.get("m").version == v1 and len(hashes) == 2
    assert mgr.poll() and mgr.get("m").version == v1 and models_status(mgr)["pinned"] is True
    assert mgr.reload("m").version == v1  # a plain reload keeps the pin
    released = mgr.reload("m", unpin=True)
    assert released.version == v2 and released.swapped and not released.pinned
    assert models_status(mgr)["pinned"] is False and len(hashes) == 2

    f = good_model(tmp_path / "file.onnx", 3)
    files = manager_for(str(f))
    files.load_all()
    first = files.get("file").version
    n = len(hashes)
    assert [files.reload("file").swapped for _ in range(3)] == [False] * 3 and len(hashes) == n
    good_model(f, 0)  # rewritten: another size/mtime, so hashed again and a new version
    assert files.reload("file").swapped and files.get("file").version != first and len(hashes) == n + 1


def models_status(mgr) -> dict:
    return mgr.status()[0].model_dump()


def test_the_watcher_survives_odd_errors_and_bugs_in_its_round(manager_for, tmp_path, monkeypatch, caplog):
    from visionloop import registry
    from visionloop.serving import manager as manager_module

    v1, v2 = (register("m", good_model(tmp_path / f"v{i}.onnx", i)) for i in (1, 2))
    mgr = manager_for("m@champion")
    mgr.load_all()
    real_peek, real_poll = manager_module.current_version, mgr.poll
    odd = iter([KeyError("odd metadata at 0x7f0012345678"), KeyError("odd metadata at 0x7f00abcdef01"),
                OSError(5, "I/O error")])
    bugs = iter([TypeError("bug in the round"), TypeError("bug in the round")])

    def peek(spec):
        err = next(odd, None)
        if err is not None:
            raise err
        return real_peek(spec)

    def poll():
        err = next(bugs, None)
        if err is not None:
            raise err
        return real_poll()

    monkeypatch.setattr(manager_module, "current_version", peek)
    monkeypatch.setattr(mgr, "poll", poll)
    registry.set_alias("m", "champion", v2)
    with caplog.at_level(logging.ERROR, logger="visionloop.serving"):
        mgr.start_watch(0.02)
        wait_for("swap to v2", lambda: mgr.slots["m"].current.version == v2, 30, 0.05)
    status = models_status(mgr)
    assert mgr._watcher.is_alive()
    assert status["watch_errors"] == 5 and status["last_error"] is None  # cleared by the swap
    assert mgr.metrics.watch_errors.labels("m")._value.get() == 5
    lines = [r.getMessage() for r in caplog.records]
    assert sum("odd metadata" in line for line in lines) == 1, lines  # once per distinct error
    assert sum("I/O error" in line for line in lines) == 1 and sum("bug in the round" in line for line in lines) == 1


# -- a real server: the registry away for 30 s, models whose warm-up fails --------------------
@pytest.fixture
def mlflow_server(tmp_path, vl_home, monkeypatch):
    from visionloop.settings import get_settings

    root = tmp_path / "mlflow"
    root.mkdir()
    server = MlflowServer(root)
    server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    get_settings(fresh=True)
    yield server
    server.stop()


def test_registry_away_for_30s_the_server_keeps_serving_then_swaps(mlflow_server, tmp_path, vl_home):
    from visionloop import registry

    v1, v2 = (register("m", good_model(tmp_path / f"v{i}.onnx", i)) for i in (1, 2))
    env = {"VISIONLOOP_HOME": str(vl_home), "MLFLOW_TRACKING_URI": mlflow_server.uri,
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    srv = Server(["m@champion"], tmp_path, "--watch", "0.5", env=env)
    try:
        with Load(srv.url, "m") as load:
            wait_for("a first poll", lambda: models(srv)["last_check_at"], 20)
            mlflow_server.stop()
            down = time.monotonic()
            status = wait_for("the outage reported", lambda: (m := models(srv))["watch_errors"] >= 2 and m, 30)
            assert status["version"] == v1 and status["state"] == "ready" and status["last_error"]
            outage = status["last_error"]
            assert srv.client.post("/v1/models/m/reload", headers=AUTH).status_code == 503  # and says why
            time.sleep(max(0.0, 30 - (time.monotonic() - down)))  # the outage lasts 30 s
            errors = models(srv)["watch_errors"]
            mlflow_server.start()
            registry.set_alias("m", "champion", v2)
            wait_for("the swap once the registry is back", lambda: models(srv)["version"] == v2, 30)
            time.sleep(0.5)  # a few requests on the new version
        load.check([v1, v2])
        assert any(v == v1 and t > down + 29 for t, _, v in load.log), "no request served during the outage"
        status = models(srv)
        assert status["last_error"] is None and status["state"] == "ready" and status["watch_errors"] >= errors >= 5
        assert srv.metric("visionloop_watch_errors_total", model="m") == status["watch_errors"]
        assert srv.metric("visionloop_model_swaps_total", model="m") == 1
        logged = [line for line in srv.log.read_text().splitlines() if outage[:80] in line]
        assert 1 <= len(logged) <= 2, f"{errors} errors logged {len(logged)} times"  # once per distinct error
    finally:
        srv.stop()


def test_a_model_whose_warmup_fails_is_reported_and_the_watcher_moves_on(tmp_path, vl_home):
    from visionloop import registry

    v1 = register("m", good_model(tmp_path / "v1.onnx", 1))
    broken = register("m", failing_model(tmp_path / "v2.onnx"))
    wrong = register("m", wrong_shape_model(tmp_path / "v3.onnx"))
    v4 = register("m", good_model(tmp_path / "v4.onnx", 2))
    srv = Server(["m@champion"], tmp_path, "--watch", "0.3", env={"VISIONLOOP_HOME": str(vl_home)})
    try:
        with Load(srv.url, "m") as load:
            for version, words in [(broken, "warm-up failed"), (wrong, "output shape")]:
                registry.set_alias("m", "champion", version)
                status = wait_for(f"version {version} refused", lambda w=words: w in (models(srv)["last_error"] or "")
                                  and models(srv), 30)
                assert status["version"] == v1 and status["state"] == "ready", status
            wait_polls(srv, 2)  # the broken version is not retried at every poll
            status = models(srv)
            assert status["watch_errors"] == 2 and srv.metric("visionloop_model_load_failures_total", model="m") == 2
            registry.set_alias("m", "champion", v4)
            wait_for("the swap to the next good version", lambda: models(srv)["version"] == v4, 30)
            time.sleep(0.5)
        load.check([v1, v4])
        status = models(srv)
        assert status["last_error"] is None and status["watch_errors"] == 2
        r = srv.client.post("/v1/models/m/predict", files={"file": ("a.png", _png())}).json()
        assert r["version"] == v4 and r["classes"][0]["class_name"] == "c"
    finally:
        srv.stop()

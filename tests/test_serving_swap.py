"""Hot swap on a real server under load: zero lost requests, monotonic versions, a broken model refused.

Plus the registry path: ``M@champion`` re-resolved by ``POST /reload`` and by ``--watch``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from serving_helpers import TOKEN, Server, second_version

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _load(url: str, data: bytes, stop: threading.Event, log: list) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = c.post("/v1/models/shapes/predict", files={"file": ("a.png", data)})
                status, version = r.status_code, r.json().get("version")
            except Exception as exc:  # a lost request: recorded, asserted below
                status, version = repr(exc), None
            log.append((t0, time.monotonic(), status, version))


def test_hot_swap_under_load_loses_nothing(tiny_model, tmp_path):
    v2_file = second_version(tiny_model.onnx, tmp_path / "v2.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX model\n" * 200)
    srv = Server([f"shapes={tiny_model.onnx}"], tmp_path, "--workers-threads", "2", "--queue", "256")
    try:
        v1 = srv.client.get("/v1/models").json()["models"][0]["version"]
        data = tiny_model.test_images[0].read_bytes()
        stop, logs = threading.Event(), [[] for _ in range(4)]
        clients = [threading.Thread(target=_load, args=(srv.url, data, stop, log)) for log in logs]
        for t in clients:
            t.start()
        try:
            time.sleep(4)
            s1 = time.monotonic()
            swap = srv.client.post("/v1/models/shapes/reload", json={"path": str(v2_file)}, headers=AUTH)
            e1 = time.monotonic()
            time.sleep(4)
            bad = srv.client.post("/v1/models/shapes/reload", json={"path": str(broken)}, headers=AUTH)
            time.sleep(4)
        finally:
            stop.set()
            for t in clients:
                t.join(60)
        assert swap.status_code == 200, swap.text
        v2 = swap.json()["version"]
        assert swap.json()["swapped"] and swap.json()["previous_version"] == v1 and v2 != v1
        assert bad.status_code == 409 and bad.json()["error"]["code"] == "reload_failed"

        everything = [row for log in logs for row in log]
        assert len(everything) > 20
        lost = [row for row in everything if row[2] != 200]
        assert not lost, f"{len(lost)} requests failed during the swaps, e.g. {lost[:3]}"
        for log in logs:
            versions = [v for _, _, _, v in log]
            assert set(versions) <= {v1, v2}
            if v2 in versions:  # monotonic: never the old version after the first new one
                first_new = versions.index(v2)
                assert v1 not in versions[first_new:], "old version answered after the new one"
            assert all(v == v2 for start, _, _, v in log if start >= e1), "request started after the swap got v1"
            assert all(v == v1 for _, end, _, v in log if end <= s1), "request before the swap got v2"
        assert {v for *_, v in everything} == {v1, v2}

        status = srv.client.get("/v1/models").json()["models"][0]
        assert status["version"] == v2 and status["state"] == "ready"
        assert status["last_error"] and "broken.onnx" in status["last_error"]
        after = srv.client.post("/v1/models/shapes/predict", files={"file": ("a.png", data)})
        assert after.status_code == 200 and after.json()["version"] == v2
        assert srv.metric("visionloop_model_swaps_total", model="shapes") == 1
        assert srv.metric("visionloop_model_load_failures_total", model="shapes") == 1
        assert srv.metric("visionloop_model_info", model="shapes", version=v2) == 1
        assert srv.metric("visionloop_model_info", model="shapes", version=v1) == 0
    finally:
        srv.stop()


def _register_two_versions(tiny_model, tmp_path) -> None:
    from visionloop import registry

    c = registry.client()
    for i, path in enumerate([tiny_model.onnx, second_version(tiny_model.onnx, tmp_path / "v2.onnx")]):
        run = c.create_run(experiment_id="0")  # one run per version: each holds its own model/model.onnx
        card = registry.ModelCard(task="detect", classes=tiny_model.classes, imgsz=tiny_model.imgsz)
        registry.register_version("shapes", run.info.run_id, path, card, description=f"v{i + 1}")
    assert registry.get_alias("shapes", "champion") == "1"


def _status(srv: Server) -> dict:
    return srv.client.get("/v1/models").json()["models"][0]


def _version(srv: Server) -> str:
    return _status(srv)["version"]


def test_registry_alias_reload_and_watch(tiny_model, tmp_path, vl_home):
    from visionloop import registry

    _register_two_versions(tiny_model, tmp_path)
    env = {"VISIONLOOP_HOME": str(vl_home)}
    srv = Server(["shapes@champion"], tmp_path, env=env)
    watcher = Server(["shapes@champion"], tmp_path, "--watch", "0.5", env=env)
    try:
        assert _version(srv) == "1" and _version(watcher) == "1"
        m = srv.client.get("/v1/models").json()["models"][0]
        assert m["alias"] == "champion" and m["source"] == "shapes@champion"
        registry.set_alias("shapes", "champion", "2")
        r = srv.client.post("/v1/models/shapes/reload", headers=AUTH)
        assert r.status_code == 200 and r.json() == {"name": "shapes", "previous_version": "1", "version": "2",
                                                     "swapped": True, "classes_changed": False, "pinned": False}
        data = tiny_model.test_images[0].read_bytes()
        assert srv.client.post("/detect", files={"file": ("a.png", data)}).json()["version"] == "2"
        pinned = srv.client.post("/v1/models/shapes/reload", json={"version": "1"}, headers=AUTH)
        assert pinned.status_code == 200 and pinned.json()["version"] == "1" and pinned.json()["pinned"] is True
        missing = srv.client.post("/v1/models/shapes/reload", json={"version": "99"}, headers=AUTH)
        assert missing.status_code == 404 and _version(srv) == "1"
        deadline = time.monotonic() + 30  # the watcher polls every 0.5 s
        while _version(watcher) != "2" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _version(watcher) == "2"
        assert watcher.client.post("/detect", files={"file": ("a.png", data)}).json()["version"] == "2"

        # a manual pin holds against the alias until it is released
        pin = watcher.client.post("/v1/models/shapes/reload", json={"version": "1"}, headers=AUTH)
        assert pin.status_code == 200 and pin.json()["pinned"] is True and _version(watcher) == "1"
        polls = {_status(watcher)["last_check_at"]}
        deadline = time.monotonic() + 20
        while len(polls) < 3 and time.monotonic() < deadline:  # at least two polls since the pin
            time.sleep(0.2)
            polls.add(_status(watcher)["last_check_at"])
        assert len(polls) >= 3 and _version(watcher) == "1" and _status(watcher)["pinned"] is True
        bad = watcher.client.post("/v1/models/shapes/reload", json={"version": "2", "unpin": True}, headers=AUTH)
        assert bad.status_code == 422
        released = watcher.client.post("/v1/models/shapes/reload", json={"unpin": True}, headers=AUTH)
        assert released.status_code == 200, released.text
        assert released.json()["version"] == "2" and released.json()["swapped"] and not released.json()["pinned"]
        assert _status(watcher)["pinned"] is False and _status(watcher)["watch_errors"] == 0
    finally:
        srv.stop()
        watcher.stop()


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


@pytest.mark.parametrize("max_batch", ["1", "2"])
def test_hot_swaps_leave_no_thread_pools_behind(tiny_dynamic_onnx, tiny_model, tmp_path, max_batch):
    """Each session owns intra-op threads (3 here) and a batcher one runner: a swapped-out model
    that stayed referenced would leave them behind, swap after swap."""
    files = [tiny_dynamic_onnx, second_version(tiny_dynamic_onnx, tmp_path / "v2.onnx")]
    srv = Server([f"shapes={files[0]}"], tmp_path, "--intra-threads", "4", "--max-batch", max_batch,
                 "--batch-policy", "always")  # batched whatever the load-time measurement says: its runners count
    data = tiny_model.test_images[0].read_bytes()

    def predict() -> None:
        assert srv.client.post("/v1/models/shapes/predict", files={"file": ("a.png", data)}).status_code == 200

    try:
        predict()  # the pool's first thread, and the reload's worker thread, exist from here on
        assert srv.client.post("/v1/models/shapes/reload", headers=AUTH).json()["swapped"] is False
        baseline = _threads(srv.proc.pid)
        for i in range(6):
            r = srv.client.post("/v1/models/shapes/reload", json={"path": str(files[(i + 1) % 2])}, headers=AUTH)
            assert r.status_code == 200 and r.json()["swapped"], r.text
            predict()
        deadline = time.monotonic() + 15  # a session is freed when its last request is done: soon
        while _threads(srv.proc.pid) > baseline + 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _threads(srv.proc.pid) <= baseline + 2, (baseline, _threads(srv.proc.pid))
        status = _status(srv)
        assert status["intra_threads"] == 4 and status["max_batch"] == int(max_batch)
    finally:
        srv.stop()

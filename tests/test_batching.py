"""Micro-batching (``serve --max-batch``): the batcher on a real ONNX session, the manager's
swaps with it, and the real server answering concurrent requests exactly as an unbatched one."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from serving_helpers import Server, as_rows, assert_parity, det_rows, jpeg_bytes, second_version
from visionloop.serving.batching import MicroBatcher, batching_pays
from visionloop.serving.manager import ModelManager, RuntimeOptions
from visionloop.serving.metrics import Metrics
from visionloop.serving.preprocess import decode_image
from visionloop.serving.providers import available_cpus
from visionloop.serving.runtime import OnnxModel, PredictParams, create_session, run_session
from visionloop.serving.sources import parse_spec

SHAPES = [(1, 3, 32, 32), (1, 3, 32, 64), (1, 3, 64, 32)]
LONG_WAIT_MS = 60_000.0  # "wait for the whole batch": the batch closes as soon as it is full
NC = 2


def head_model(path: Path, dynamic_batch: bool = True) -> Path:
    """A YOLO-head-shaped ONNX file: Conv(3 → 4 + NC) → Sigmoid → (N, 4 + NC, h*w), dynamic h, w.

    Every output row depends on its own input only, so wrongly split batches show."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4 + NC, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0, 4 + NC, -1], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Mul", ["s", "scale"], ["p"]),
             helper.make_node("Reshape", ["p", "shape"], ["output0"])]
    inits.append(numpy_helper.from_array(np.array(31.0, np.float32), "scale"))  # boxes of a few pixels
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, "h", "w"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 4 + NC, "n"])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for k, v in {"imgsz": "[64, 64]", "stride": "32", "task": "detect", "names": "{0: 'a', 1: 'b'}"}.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Path:
    return head_model(tmp_path_factory.mktemp("head") / "head.onnx")


@pytest.fixture(scope="module")
def direct(head):
    return partial(run_session, create_session(head, 1), "images")


def _tensor(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.random(shape, dtype=np.float32)


def _run_all(batcher: MicroBatcher, direct, tensors: list[np.ndarray], threads: int) -> None:
    """Every tensor through the batcher from ``threads`` threads at once; each answer checked."""
    errors: list[BaseException] = []

    def one(t: np.ndarray) -> None:
        try:
            np.testing.assert_allclose(batcher.run(t), direct(t), rtol=1e-5, atol=1e-5)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, tensors))
    assert not errors, errors[:3]


def test_a_full_batch_is_split_by_shape_and_back_to_each_caller(direct):
    rng, sizes = np.random.default_rng(1), []
    batcher = MicroBatcher(direct, 4, LONG_WAIT_MS, sizes.append)
    try:
        tensors = [_tensor(rng, SHAPES[0]), _tensor(rng, SHAPES[1]), _tensor(rng, SHAPES[0]), _tensor(rng, SHAPES[1])]
        _run_all(batcher, direct, tensors, threads=4)
        assert sorted(sizes) == [2, 2]  # one gathered batch of 4, run as two groups of one shape each
    finally:
        batcher.close()


def test_many_threads_mixed_shapes_equal_direct_runs(direct):
    rng, sizes = np.random.default_rng(2), []
    batcher = MicroBatcher(direct, 4, 5.0, sizes.append)
    try:
        tensors = [_tensor(rng, SHAPES[i % 3]) for i in range(60)]
        _run_all(batcher, direct, tensors, threads=8)
        assert sum(sizes) == 60 and max(sizes) <= 4
        assert max(sizes) > 1, "no batch formed"
    finally:
        batcher.close()
    assert not batcher.running
    t = _tensor(rng, SHAPES[2])  # after close: runs directly on the session
    np.testing.assert_array_equal(batcher.run(t), direct(t))
    assert sum(sizes) == 60


def test_several_runners_batch_at_once_and_all_stop(direct):
    """runners=2 (the server's --workers-threads): two batched runs go on at the same time."""
    rng, sizes, lock = np.random.default_rng(3), [], threading.Lock()
    running, most = [0], [0]

    def run(t: np.ndarray) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.01)  # long enough that the other runner's batch overlaps this one
            return direct(t)
        finally:
            with lock:
                running[0] -= 1

    batcher = MicroBatcher(run, 3, 5.0, sizes.append, runners=2)
    try:
        assert batcher.runners == 2
        _run_all(batcher, direct, [_tensor(rng, SHAPES[0]) for _ in range(40)], threads=8)
        assert sum(sizes) == 40 and max(sizes) <= 3 and max(sizes) > 1
        assert most[0] == 2, "the two runners never ran at once"
    finally:
        batcher.close()
    assert not batcher.running


class CostClock:
    """A clock only the runs move: a run of B images costs ``cost(B)`` seconds. measure_gain's
    answer then follows the cost model, not this machine's noise."""

    def __init__(self, cost):
        self.cost, self.now, self.lock = cost, 0.0, threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def run(self, direct):
        def run(t: np.ndarray) -> np.ndarray:
            with self.lock:
                self.now += self.cost(len(t))
            return direct(t)
        return run


@pytest.mark.parametrize(("cost", "gain"), [(lambda b: 0.010, 4.0),  # a GPU: a batch costs what one image does
                                            (lambda b: 0.004 * b, 1.0),  # this CPU: the same per image
                                            (lambda b: 0.004 * b + 0.002, 4 / 3)])  # a fixed cost per run saved
@pytest.mark.parametrize("streams", [1, 2])
def test_measure_gain_follows_what_a_batch_costs(direct, cost, gain, streams):
    from visionloop.serving.batching import measure_gain

    clock, calls = CostClock(cost), []
    run = clock.run(direct)
    got = measure_gain(lambda t: calls.append(len(t)) or run(t), _tensor(np.random.default_rng(6), SHAPES[0]), 4,
                       streams, clock=clock)
    assert got == pytest.approx(gain)
    assert batching_pays(got) == (gain > 1)
    assert sorted(set(calls)) == [1, 4] and calls.count(4) == 3 * streams  # warm-up + 2 rounds, every stream


def test_measure_gain_raises_what_a_batch_raised(direct):
    from visionloop.serving.batching import measure_gain

    def run(t: np.ndarray) -> np.ndarray:
        if len(t) > 1:
            raise RuntimeError("this model takes one image at a time")
        return direct(t)

    with pytest.raises(RuntimeError, match="one image at a time"):
        measure_gain(run, _tensor(np.random.default_rng(7), SHAPES[0]), 4, streams=2)


@pytest.mark.parametrize(("measured", "batched"), [(3.0, True), (1.05, False), (RuntimeError("no batch"), False)])
def test_the_manager_batches_only_what_measured_cheaper(head, monkeypatch, caplog, measured, batched):
    def measure(self, max_batch: int, streams: int) -> float:
        assert (max_batch, streams) == (4, 2)
        if isinstance(measured, Exception):
            raise measured
        self.batch_gain = measured
        return measured

    monkeypatch.setattr(OnnxModel, "measure_batching", measure)
    grown: list[int] = []
    manager = ModelManager([parse_spec(f"h={head}")], RuntimeOptions(max_batch=4, batch_runners=2), Metrics(),
                           on_batching=grown.append)
    try:
        with caplog.at_level("INFO", logger="visionloop.serving"):
            manager.load_all()
        (status,) = manager.status()
        assert status.max_batch == (4 if batched else 1) and grown == ([4] if batched else [])
        assert ("serving unbatched" in caplog.text) == (not batched)
        if isinstance(measured, Exception):
            assert "a batch of 4 failed (RuntimeError: no batch)" in caplog.text and status.batch_gain is None
        else:
            assert status.batch_gain == measured
    finally:
        manager.stop()


def test_the_pool_grows_for_batching_and_never_shrinks():
    import asyncio

    from visionloop.serving.manager import InferencePool

    async def together(pool: InferencePool, n: int) -> None:  # n jobs that finish only if all run at once
        barrier = threading.Barrier(n, timeout=10)
        await asyncio.gather(*(pool.run(barrier.wait) for _ in range(n)))

    async def main() -> None:
        pool = InferencePool(2, 64, Metrics())
        try:
            await together(pool, 2)
            old = pool.executor
            pending = asyncio.gather(*(pool.run(time.sleep, 0.2) for _ in range(2)))  # still on the old threads
            await asyncio.sleep(0.05)
            pool.grow(8)
            pool.grow(4)
            assert pool.workers == 8 and pool.executor is not old
            await together(pool, 8)
            await pending  # what the old pool had runs to the end
        finally:
            pool.shutdown()

    asyncio.run(main())


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_an_error_fails_its_group_only_and_the_runner_goes_on():
    def run(t: np.ndarray) -> np.ndarray:
        if (t < 0).any():
            raise RuntimeError("bad input")
        return t * 2

    batcher = MicroBatcher(run, 3, LONG_WAIT_MS)
    good, bad, other = np.ones((1, 2)), -np.ones((1, 2)), np.ones((1, 3))
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(batcher.run, t) for t in (good, bad, other)]
        outcomes = [f.exception() or f.result() for f in futures]
        assert isinstance(outcomes[0], RuntimeError) and isinstance(outcomes[1], RuntimeError)  # one group
        np.testing.assert_array_equal(outcomes[2], other * 2)  # another shape: its own group
        with ThreadPoolExecutor(3) as pool:  # a full batch again: the runner survived the error
            assert all(np.array_equal(r, good * 2) for r in pool.map(batcher.run, [good] * 3))
    finally:
        batcher.close()


def test_predict_through_the_batcher_and_close_frees_the_model(head):
    plain, batched = OnnxModel(head, 1), OnnxModel(head, 1)
    batched.start_batching(4, LONG_WAIT_MS)
    rng = np.random.default_rng(3)
    images = [decode_image(jpeg_bytes((rng.random((h, w, 3)) * 255).astype(np.uint8)))
              for h, w in [(64, 64), (40, 64), (64, 40), (64, 64)]]  # letterboxed to three shapes
    params = PredictParams(conf=0.5)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(batched.predict, images, [params] * len(images)))
    for image, res in zip(images, got):
        want = det_rows(plain.predict(image, params).detections)
        assert len(want) and np.allclose(det_rows(res.detections), want, atol=1e-3)
    assert batched.max_batch == 4 and plain.max_batch == 1
    runner = batched.batcher
    batched.close()
    assert not runner.running
    assert len(batched.predict(images[0], params).detections)  # an in-flight request after a swap
    model, session = weakref.ref(batched), weakref.ref(batched.session)
    gc.disable()  # freed by reference counting alone: no cycle waits for a gc pass
    try:
        del batched, runner
        assert model() is None and session() is None
    finally:
        gc.enable()


def test_a_static_batch_model_cannot_batch(tmp_path):
    model = OnnxModel(head_model(tmp_path / "static.onnx", dynamic_batch=False), 1)
    assert not model.info.dynamic_batch
    with pytest.raises(ValueError, match="fixed batch"):
        model.start_batching(4, 1.0)


def test_manager_swaps_free_the_old_model_and_its_runner(head, tmp_path):
    other = second_version(head, tmp_path / "other.onnx")
    static = head_model(tmp_path / "static.onnx", dynamic_batch=False)
    metrics = Metrics()
    manager = ModelManager([parse_spec(f"h={head}"), parse_spec(f"s={static}")],
                           RuntimeOptions(max_batch=4, max_wait_ms=1.0, batch_adaptive=False), metrics)
    manager.load_all()
    try:
        status = {s.name: s for s in manager.status()}
        assert status["h"].max_batch == 4 and status["h"].intra_threads == available_cpus()
        assert status["s"].max_batch == 1 and status["s"].intra_threads == available_cpus()  # one pool per session
        first = manager.get("h")
        runner, model = first.model.batcher, weakref.ref(first.model)
        del first
        assert manager.reload("h", path=str(other)).swapped
        assert not runner.running
        del runner
        gc.disable()
        try:
            assert model() is None, "the swapped-out model is still referenced"
        finally:
            gc.enable()
        assert manager.get("h").model.max_batch == 4
    finally:
        manager.stop()
    assert not manager.get("h").model.batcher.running


# -- the real server ---------------------------------------------------------------------------
CONF = 0.001  # the tiny model is barely trained: low confidences, but boxes to compare


def _images(tiny_model) -> list[bytes]:
    """Test images as they are and resized to two aspect ratios: three letterboxed shapes."""
    out = []
    for path in tiny_model.test_images[:4]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        out += [path.read_bytes(), *(jpeg_bytes(np.asarray(Image.fromarray(rgb).resize(size))) for size in
                                     [(237, 131), (120, 200)])]
    return out


def _predict(url: str, model: str, data: bytes) -> np.ndarray:
    r = httpx.post(f"{url}/v1/models/{model}/predict", params={"conf": CONF}, files={"file": ("a.jpg", data)},
                   timeout=60)
    assert r.status_code == 200, r.text
    return as_rows(r.json()["detections"])


def _models(srv: Server) -> dict[str, dict]:
    return {m["name"]: m for m in srv.client.get("/v1/models").json()["models"]}


def test_server_batches_concurrent_requests_like_an_unbatched_one(tiny_model, tiny_dynamic_onnx, tmp_path):
    images = _images(tiny_model)
    batched = Server([f"dyn={tiny_dynamic_onnx}", f"static={tiny_model.onnx}"], tmp_path,
                     "--max-batch", "4", "--max-wait-ms", "20", "--workers-threads", "4", "--batch-policy", "always")
    plain = Server([f"dyn={tiny_dynamic_onnx}"], tmp_path)
    adaptive = Server([f"dyn={tiny_dynamic_onnx}"], tmp_path, "--max-batch", "4")  # the default policy
    try:
        want = [_predict(plain.url, "dyn", data) for data in images]
        assert all(len(w) for w in want)
        batches = lambda: batched.metric("visionloop_batch_size_count", model="dyn")  # noqa: E731
        images_run = lambda: batched.metric("visionloop_batch_size_sum", model="dyn")  # noqa: E731
        for _ in range(5):  # concurrent rounds until one gathered a batch (the first almost always does)
            with ThreadPoolExecutor(len(images)) as pool:
                got = list(pool.map(partial(_predict, batched.url, "dyn"), images))
            for g, w in zip(got, want):
                assert_parity(g, w, min_iou=0.999, conf_tol=1e-3)
            if images_run() > batches():
                break
        assert images_run() > batches(), "no batch of more than one image was run"
        assert batched.metric("visionloop_batch_size_bucket", model="dyn", le="4.0") == batches()  # none above 4

        status, cpus = _models(batched), available_cpus()
        # every session: the CPUs the process may use (its pool is shared by concurrent runs)
        assert status["dyn"]["max_batch"] == 4 and status["dyn"]["intra_threads"] == cpus
        assert status["static"]["max_batch"] == 1 and status["static"]["intra_threads"] == cpus
        assert _models(plain)["dyn"]["max_batch"] == 1 and _models(plain)["dyn"]["intra_threads"] == cpus
        assert "model static: input batch dimension is fixed" in batched.log.read_text()
        assert len(_predict(batched.url, "static", images[0]))  # a static-batch model still serves
        assert status["dyn"]["batch_gain"] is None and _models(plain)["dyn"]["batch_gain"] is None  # not measured

        measured = _models(adaptive)["dyn"]  # batched only if its batches measured cheaper at load
        assert measured["batch_gain"] > 0
        assert measured["max_batch"] == (4 if batching_pays(measured["batch_gain"]) else 1), measured
        assert ("serving unbatched" in adaptive.log.read_text()) == (measured["max_batch"] == 1)
        for srv in (adaptive, plain):  # concurrent requests: each pool starts all the threads it may
            with ThreadPoolExecutor(len(images)) as pool:
                got = list(pool.map(partial(_predict, srv.url, "dyn"), images))
            for g, w in zip(got, want):
                assert_parity(g, w, min_iou=0.999, conf_tol=1e-3)
        # unbatched, the server is the one without --max-batch, down to its threads (the pool has one per
        # worker); batched, it has more (the runners, and a pool of workers x max_batch)
        assert (_threads(adaptive.proc.pid) == _threads(plain.proc.pid)) == (measured["max_batch"] == 1)
    finally:
        batched.stop()
        plain.stop()
        adaptive.stop()


@pytest.mark.parametrize(("args", "env", "words"), [
    (["--max-batch", "0"], {}, "--max-batch"),
    (["--max-wait-ms", "-1"], {}, "--max-wait-ms"),
    ([], {"VISIONLOOP_MAX_BATCH": "0"}, "--max-batch"),
])
def test_cli_refuses_bad_batching_options(tmp_path, args, env, words):
    r = run_cli("serve", "--model", str(tmp_path / "m.onnx"), "--port", "1", *args, env=env)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_refuses_an_unknown_batch_policy(tmp_path):
    r = run_cli("serve", "--model", str(tmp_path / "m.onnx"), "--port", "1", "--batch-policy", "sometimes")
    assert r.returncode == 1 and "--batch-policy must be adaptive or always" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr

"""Soak: a watching, capturing server under a light load and `visionloop loop --watch` with a
simulated annotator (the demo's: the generator's true boxes) run 5 iterations unattended.

Everything is real and separate processes: the server (`serve --watch`, capture on, a small
`--capture-max`), the loop (`loop --watch --max-iterations 5`), MLflow in the home; the test
process sends the load and labels the captures. The gate is made permissive (``min_delta -1``)
so that every iteration promotes and the server must hot-swap five times under load; what the
assertions accept is what the issue allows: promoted (and served) or refused with its interval.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

import numpy as np
import pytest
from conftest import VISIONLOOP
from loop_fixtures import IMGSZ, Server, isolated_home, make_dataset, train

from visionloop import registry
from visionloop.datasets import synthetic
from visionloop.demo import label_from_truth
from visionloop.feedback.inbox import count_by_state, count_waiting, list_captures
from visionloop.store import open_store, sha256_bytes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL, DATA, CAPTURE_MAX, ITERATIONS = "soakm", "soak", 15, 5
RUN_LIMIT = 420.0  # seconds for the loop's 5 iterations (about 90 s measured on 2 busy cores)


class Load(threading.Thread):
    """Posts generated images at about ``rate`` per second, at most ``limit`` of them; keeps the
    true boxes by the sha256 of the bytes sent, and every answer (or failure)."""

    def __init__(self, url: str, rate: float = 2.5, limit: int = 2000):
        super().__init__(daemon=True)
        import httpx

        self.http = httpx.Client(base_url=url, timeout=30)
        self.rate, self.limit = rate, limit
        self.truth: dict[str, list] = {}
        self.versions: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        rng = np.random.default_rng(4242)
        for _ in range(self.limit):
            if self.stop.is_set():
                break
            im, boxes = synthetic.render(rng, size=IMGSZ)
            png = synthetic.png_bytes(im)
            with self.lock:
                self.truth[sha256_bytes(png)] = boxes
            try:
                r = self.http.post(f"/v1/models/{MODEL}/predict", files={"file": ("i.png", png, "image/png")})
                if r.status_code == 200:
                    self.versions.append(r.json()["version"])
                else:
                    self.failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except Exception as exc:  # a refused connection during a swap is a failure too
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.stop.wait(1 / self.rate)
        self.http.close()


class Annotator(threading.Thread):
    """Labels pending captures with the generator's boxes, a few at a time (a human's pace).
    It starts late, once the server's cap is full and has refused captures for a while: from
    then on only labeling makes room, and the server must capture again."""

    def __init__(self, load: Load, per_round: int = 4, every: float = 1.0):
        super().__init__(daemon=True)
        self.load, self.per_round, self.every = load, per_round, every
        self.labeled = 0
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        store = open_store()
        while count_waiting(store, MODEL) < CAPTURE_MAX and not self.stop.wait(0.5):
            pass
        self.stop.wait(3)  # the cap is full: the server drops captures meanwhile
        while not self.stop.wait(self.every):
            try:
                pending = list_captures(store, MODEL, states={"pending"})[: self.per_round]
                with self.load.lock:
                    truth = dict(self.load.truth)
                self.labeled += label_from_truth(store, pending, truth)
            except Exception as exc:  # a record moved under us: try again next round, but say so
                self.errors.append(f"{type(exc).__name__}: {exc}")


def _settled_counts(server: Server, timeout: float = 30) -> tuple[dict[str, int], float]:
    """Captures are written off the request path: wait until the inbox holds what the server
    counted as written."""
    deadline = time.monotonic() + timeout
    while True:
        written = server.metric("visionloop_captures_total", model=MODEL)
        counts = count_by_state(open_store(), MODEL)
        if sum(counts.values()) == written or time.monotonic() > deadline:
            return counts, written
        time.sleep(0.5)


def test_soak_five_unattended_iterations(tmp_path):
    home = tmp_path / "home"
    config = tmp_path / "visionloop.yaml"
    config.write_text("gate:\n  min_delta: -1.0\n  max_class_drop: 1.0\n  resamples: 200\n")
    with isolated_home(home):
        make_dataset(DATA, 24, seed=3)
        assert train(f"{DATA}@1", MODEL, epochs=1, batch=8) == "1"
        server = Server(["--model", f"{MODEL}@champion", "--watch", "1", "--capture", "all", "--capture-rate", "0.5",
                         "--capture-max", str(CAPTURE_MAX)], tmp_path / "server.log")
        load = Load(server.url)
        annotator = Annotator(load)
        loop_log = tmp_path / "loop.log"
        try:
            load.start()
            annotator.start()
            with open(loop_log, "w") as fh:
                loop = subprocess.Popen(
                    [*VISIONLOOP, "loop", "--data", DATA, "--model", MODEL, "--watch", "--max-iterations",
                     str(ITERATIONS), "--min-labels", "10", "--no-drift", "--poll", "1s", "--backoff", "2s",
                     "--epochs", "1", "--config", str(config), "--report", str(tmp_path / "report.md")],
                    env={**os.environ, "LABEL_STUDIO_URL": ""}, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT)
                try:
                    rc = loop.wait(RUN_LIMIT)
                except subprocess.TimeoutExpired:
                    loop.kill()
                    loop.wait()
                    rc = None
            out = loop_log.read_text()
            assert rc == 0, out[-4000:]
            champion = registry.get_alias(MODEL, registry.CHAMPION)
            assert server.wait_version(MODEL, champion) == champion  # the last promotion is served too
            time.sleep(2)  # a few more answers from it, under load
        finally:
            annotator.stop.set()
            load.stop.set()
            load.join(30)
            annotator.join(30)
        try:
            counts, written = _settled_counts(server)
            refused = server.metric("visionloop_captures_dropped_total", model=MODEL, why="inbox_full")
            swaps = server.metric("visionloop_model_swaps_total", model=MODEL)
        finally:
            server.stop()
        versions = [v.version for v in registry.list_versions(MODEL)]

    # five iterations, each promoted (and then served) or refused with its interval; none failed
    assert "watch failed" not in out and f"{ITERATIONS} iteration(s)" in out, out[-4000:]
    done = re.findall(r"watch done #(\d+) \S+/(\d+): (promoted|refused) \((.*)\)", out)
    assert [int(d[0]) for d in done] == list(range(1, ITERATIONS + 1)), out[-4000:]
    served = set(load.versions)
    for _, version, status, summary in done:
        assert re.search(r"\[[-+]\d\.\d{4}, [-+]\d\.\d{4}\] \(95% interval\)", summary), summary
        if status == "promoted":
            assert version in served, (version, sorted(served))
    promoted = [d[1] for d in done if d[2] == "promoted"]
    assert swaps == len(promoted) and versions == [str(v) for v in range(1, ITERATIONS + 2)]
    assert champion == (promoted[-1] if promoted else "1")

    # zero failed requests over the whole run, under a real load
    assert load.failures == [] and len(load.versions) > 100, (load.failures[:5], len(load.versions))
    assert annotator.errors == []

    # every capture is somewhere: the states add up to what the server wrote, and it kept
    # capturing long after --capture-max captures in total (only waiting ones count)
    assert sum(counts.values()) == written, (counts, written)
    # each iteration waits for >= 10 labels, so 5 iterations took >= 50 captures: several times the cap
    assert refused > 0, (refused, counts)
    assert written > 3 * CAPTURE_MAX and counts["in_dataset"] >= ITERATIONS * 10, (written, counts)

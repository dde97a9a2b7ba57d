"""The prediction log: batches to the store, flush, retention, drops that are counted, never blocking."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from visionloop.monitoring.predlog import (
    PredictionLog,
    PredictionRecord,
    hour_folder,
    latest_version,
    mean_brightness,
    read_predictions,
    write_batch,
)
from visionloop.store import Store


def rec(ts: float, version: str = "1", conf: float = 0.9, model: str = "m") -> PredictionRecord:
    return PredictionRecord(ts=ts, model=model, version=version, task="detect", width=64, height=48,
                            brightness=120.5, confidences=[conf, conf / 2], classes={"a": 1, "b": 1})


def test_round_trip_in_batches(tmp_path):
    url = str(tmp_path / "store")
    log = PredictionLog(url, batch=10, flush_s=60)
    now = time.time()
    sent = [rec(now + i * 1e-3, conf=0.5 + i / 100) for i in range(25)]
    assert all(log.add(r) for r in sent)
    log.flush()
    store = Store(url)
    files = list(store.walk_keys("predlog/m/1"))
    assert len(files) == 3  # 25 records in batches of 10
    assert all(k.startswith(f"predlog/m/1/{hour_folder(now)}/") and k.endswith(".jsonl") for k in files)
    assert read_predictions(store, "m", "1") == sent  # exact, oldest first
    log.close()
    assert log.written == 25 and not log.dropped


def test_background_thread_writes_without_flush(tmp_path):
    url = str(tmp_path / "store")
    log = PredictionLog(url, batch=1000, flush_s=0.1)
    log.add(rec(time.time()))
    deadline = time.monotonic() + 10
    while not read_predictions(Store(url), "m") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(read_predictions(Store(url), "m")) == 1
    log.close()
    assert log.add(rec(time.time())) is False and log.dropped["closed"] == 1


def test_read_filters_by_time_and_version(tmp_path):
    store = Store(str(tmp_path / "store"))
    now = time.time()
    write_batch(store, [rec(now - 7200, "1"), rec(now - 60, "1"), rec(now - 30, "2")])
    since = datetime.fromtimestamp(now - 3600, timezone.utc)
    assert [r.version for r in read_predictions(store, "m", since=since)] == ["1", "2"]
    assert len(read_predictions(store, "m", "1")) == 2
    until = datetime.fromtimestamp(now - 45, timezone.utc)
    assert [r.ts for r in read_predictions(store, "m", "1", since=since, until=until)] == [now - 60]
    assert read_predictions(store, "nobody") == []
    assert latest_version(store, "m") == "2" and latest_version(store, "nobody") is None


def test_retention_drops_old_hour_folders(tmp_path):
    url = str(tmp_path / "store")
    store = Store(url)
    now = time.time()
    write_batch(store, [rec(now - 3 * 86400), rec(now - 86400 * 1.5), rec(now)])
    log = PredictionLog(url, retention_days=2, flush_s=60)
    log.flush()  # retention runs at flush time, even with nothing queued
    kept = read_predictions(store, "m")
    assert [round(r.ts) for r in kept] == [round(now - 86400 * 1.5), round(now)]
    assert hour_folder(now - 3 * 86400) not in store.list("predlog/m/1")
    log.close()


class FailingStore(Store):
    def write_bytes(self, key, data, *, durable=True):
        raise OSError("disk on fire")


def test_a_failing_store_counts_drops_and_add_still_answers(tmp_path):
    reasons: list[str] = []
    log = PredictionLog(str(tmp_path / "store"), batch=5, flush_s=60, on_drop=reasons.append)
    log._store = FailingStore(str(tmp_path / "store"))
    for i in range(7):
        assert log.add(rec(time.time()))
    log.flush()  # does not raise
    assert reasons == ["write_failed"] * 7 and log.dropped["write_failed"] == 7
    assert log.written == 0
    log.close()


@pytest.mark.timeout(120)  # a blocking add() would hang here: the store never answers until released
def test_full_queue_drops_instead_of_blocking(tmp_path):
    blocked = threading.Event()

    class SlowStore(Store):
        def write_bytes(self, key, data, *, durable=True):
            blocked.wait()  # a store that hangs until released: the writer thread is stuck here
            super().write_bytes(key, data, durable=durable)

    url = str(tmp_path / "store")
    reasons: list[str] = []
    log = PredictionLog(url, batch=2, flush_s=0.05, queue_size=4, on_drop=reasons.append)
    log._store = SlowStore(url)
    results = [log.add(rec(time.time())) for _ in range(200)]  # returns only if add() never waits
    assert not blocked.is_set()
    assert results.count(False) >= 200 - 4 - 2  # the queue plus at most one batch in flight
    assert reasons and set(reasons) == {"queue_full"}
    assert len(reasons) == results.count(False)
    blocked.set()
    log.close()
    assert log.written == results.count(True)
    assert len(read_predictions(Store(url), "m")) == log.written


@pytest.mark.timeout(120)  # close() waiting on the store would hang here until the timeout
def test_close_does_not_hang_on_a_hung_store(tmp_path):
    release = threading.Event()

    class HungStore(Store):
        def write_bytes(self, key, data, *, durable=True):
            release.wait()

    reasons: list[str] = []
    log = PredictionLog(str(tmp_path / "s"), batch=1, flush_s=0.01, on_drop=reasons.append)
    log._store = HungStore(str(tmp_path / "s"))
    log.close_timeout_s = 0.5
    for _ in range(5):
        log.add(rec(time.time()))
    time.sleep(0.2)  # the writer is now stuck on the first record
    log.close()  # returns although the store never will
    assert not release.is_set()
    assert reasons == ["shutdown"] * 4  # the queued ones; the one being written is the store's
    release.set()


def test_on_drop_hook_errors_do_not_escape(tmp_path):
    def broken(reason: str) -> None:
        raise RuntimeError("metric backend gone")

    log = PredictionLog(str(tmp_path / "s"), queue_size=1, flush_s=60, on_drop=broken)
    log._stop.set()  # stop the writer so the queue stays full
    log._wake.set()
    log._thread.join(5)
    log._stop.clear()
    assert log.add(rec(time.time())) is True
    assert log.add(rec(time.time())) is False
    assert log.dropped["queue_full"] == 1


def test_mean_brightness_subsamples():
    img = np.zeros((1000, 800, 3), np.uint8)
    img[:, :, 1] = 200
    assert abs(mean_brightness(img) - 0.587 * 200) < 0.5
    assert mean_brightness(np.full((3, 3, 3), 255, np.uint8)) == pytest.approx(255.0, abs=0.01)


def test_import_is_cheap_and_torch_free():
    code = ("import sys, visionloop.monitoring.predlog; "
            "bad = [m for m in ('torch', 'ultralytics', 'scipy', 'rich') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reads_of_an_empty_store(tmp_path):
    store = Store(str(tmp_path / "empty"))
    assert read_predictions(store, "m", since=datetime.now(timezone.utc) - timedelta(hours=1)) == []

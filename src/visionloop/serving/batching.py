"""Micro-batching: concurrent requests to one model share one ``session.run``.

Why: on a GPU one run over B images costs little more than a run over one, and on a CPU it
saves the per-run overhead and fills the kernels better (the gain is smaller there, and can be
none when concurrent unbatched runs already keep every core busy). Requests arrive one image at
a time, so a batch has to be gathered: the price is up to ``max_wait_ms`` of extra latency.

How: callers (inference pool threads, after their own decode and preprocess) hand one
``(1, 3, h, w)`` tensor to :meth:`MicroBatcher.run` and block on a future. Each of ``runners``
threads takes the first waiting tensor, gathers more until ``max_batch`` tensors or
``max_wait_ms`` passed, groups them by shape (the dynamic letterbox gives other h, w for other
aspect ratios; only equal shapes can be stacked), runs each group as one batch and hands
``out[i:i+1]`` back to its caller. An exception fails every caller of that group, nobody else.
One runner suits a GPU (one big batch at a time); on a CPU, where a batch costs as much per
image as a single run, ``runners`` = the server's workers keeps as many runs going at once as
without batching, so batching costs no throughput there (bench/RESULTS.md).

After :meth:`close` (the model was swapped out, or the server stops) the runners drain what was
already queued and end; a later call runs directly on the session. The batcher holds only the
``run`` callable it was given (the session), never the model object, so a swapped-out model is
freed, with its session and threads, as soon as its last request is done.

Whether batching pays is measured, not assumed (``--batch-policy adaptive``, the default):
:func:`measure_gain` times, at model load, ``runners`` concurrent callers running batches
against the same callers running single images. Below ``1 / (1 - MARGIN)`` the server serves
the model unbatched. Measured at load and not while serving, because a run's wall time under
load mostly says how the cores were shared with decoding, not what the run cost: online, on
this project's 2-core CPU, batched runs looked 1.29x cheaper per image while the server's CPU
per request fell 2% and its p99 rose.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Run = Callable[[np.ndarray], np.ndarray]
_STOP = object()  # queued by close(): everything before it is still served
MARGIN = 0.10  # batches must save this share of the time per image to be worth their wait
ROUNDS = 2  # timed rounds of each kind; the fastest of each is compared


def measure_gain(run: Run, sample: np.ndarray, max_batch: int, streams: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Images per second of batches of ``max_batch`` over that of single runs of ``sample`` (a
    ``(1, ...)`` tensor), each with ``streams`` callers at once (the server's runners): > 1 when
    a batch is cheaper per image. After one warm-up of each (a new shape allocates), the two are
    timed in turn, the same number of images each, fastest of ``ROUNDS``. A run that raises
    (a model that cannot take a batch) raises here."""
    batch = np.repeat(sample, max_batch, axis=0)
    errors: list[BaseException] = []

    def caught(work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            errors.append(exc)

    def together(work: Callable[[], object]) -> float:
        threads = [threading.Thread(target=caught, args=(work,)) for _ in range(streams)]
        t0 = clock()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return clock() - t0

    singles = lambda: [run(sample) for _ in range(max_batch)]  # noqa: E731
    together(lambda: (run(batch), run(sample)))
    single_s, batch_s = float("inf"), float("inf")
    for _ in range(ROUNDS):
        single_s = min(single_s, together(singles))
        batch_s = min(batch_s, together(lambda: run(batch)))
    return single_s / batch_s if batch_s > 0 else float("inf")


def batching_pays(gain: float) -> bool:
    return gain >= 1 / (1 - MARGIN)


@dataclass
class _Item:
    tensor: np.ndarray
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Gathers single-image tensors into batches of at most ``max_batch`` for ``run``."""

    def __init__(self, run: Run, max_batch: int, max_wait_ms: float,
                 observe: Callable[[int], None] | None = None, name: str = "vl-batch", runners: int = 1):
        if max_batch < 1 or max_wait_ms < 0 or runners < 1:
            raise ValueError(f"max_batch and runners must be >= 1 and max_wait_ms >= 0, not {max_batch}, "
                             f"{runners}, {max_wait_ms}")
        self._run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_ms / 1e3
        self._observe = observe  # called with each batch's size (the batch-size histogram)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submits against close: nothing is queued after _STOP
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(runners)]
        for t in self._threads:
            t.start()

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """The model's output for one ``(1, ...)`` tensor, computed in a batch with others."""
        item = _Item(tensor)
        with self._lock:
            queued = not self._closed
            if queued:
                self._queue.put(item)
        if not queued:  # closed: an in-flight request of a swapped-out model, or shutdown
            return self._run(tensor)
        return item.future.result()

    def close(self, timeout: float = 30.0) -> None:
        """Stop gathering: serve what is queued, end the runner threads (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:  # one marker per runner: each ends at the first it meets
                self._queue.put(_STOP)
        for t in self._threads:
            if threading.current_thread() is not t:
                t.join(timeout)

    @property
    def runners(self) -> int:
        return len(self._threads)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # -- the runner thread ------------------------------------------------------------------
    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first)
            self._run_groups(batch)

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        """``first`` and what arrives within ``max_wait_s`` of it, up to ``max_batch``; True when
        close() was seen."""
        batch, deadline = [first], time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run_groups(self, batch: list[_Item]) -> None:
        groups: dict[tuple, list[_Item]] = defaultdict(list)
        for item in batch:
            groups[(item.tensor.shape, item.tensor.dtype)].append(item)
        for items in groups.values():
            try:
                tensor = items[0].tensor if len(items) == 1 else np.concatenate([i.tensor for i in items], axis=0)
                out = self._run(tensor)
                if len(out) != len(items):
                    raise RuntimeError(f"the model answered {len(out)} rows for a batch of {len(items)}")
                if self._observe is not None:  # before the results: a caller that returns sees it counted
                    self._observe(len(items))
            except BaseException as exc:  # noqa: BLE001 - each caller re-raises it; the runner goes on
                for i in items:
                    i.future.set_exception(exc)
                continue
            for k, i in enumerate(items):
                i.future.set_result(out[k:k + 1])

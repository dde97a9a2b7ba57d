"""`visionloop loop --watch`: triggers, failures that never end the watch, the lock per model,
SIGTERM between iterations. Iterations are stubbed here (in process) or never triggered (CLI);
the real training loop is in test_loop.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from conftest import VISIONLOOP, run_cli

from visionloop.errors import ConflictError, ValidationError
from visionloop.loop import LoopOptions, LoopResult, Step, Watcher, WatchOptions, model_lock, parse_duration
from visionloop.loop import watch as watch_mod

pytestmark = pytest.mark.timeout(300)


def test_parse_duration():
    assert [parse_duration(t) for t in ("30s", "5m", "6h", "1d", "2", "0.5s")] == [30, 300, 21600, 86400, 2, 0.5]
    for bad in ("", "0s", "-1h", "6w", "h"):
        with pytest.raises(ValidationError, match="--every"):
            parse_duration(bad, "--every")


class _Script:
    """A stand-in run_iteration: raises or returns as scripted, and records each call."""

    def __init__(self, *plan):
        self.plan, self.calls = list(plan), 0

    def __call__(self, opts, say, training):
        self.calls += 1
        what = self.plan.pop(0) if self.plan else "nothing"
        if isinstance(what, Exception):
            raise what
        say(Step(name="labels", status="done", detail=f"call {self.calls}"))
        if what == "nothing":
            return LoopResult(steps=[Step(name="train", status="skipped", detail="nothing new to learn")],
                              champion_after="m/1")
        # the gate's own objects are another area's; a stand-in with what the watcher reads
        decision = SimpleNamespace(summary=lambda: "mAP50-95 change +0.0100, 95% interval [-0.0200, +0.0400]")
        promo = SimpleNamespace(promoted=what == "promote", decision=decision)
        return LoopResult.model_construct(trained="m/2", promotion=promo, steps=[], champion_after="m/1")


def _watcher(monkeypatch, script, labels=0, verdict="ok", **kw) -> tuple[Watcher, list]:
    monkeypatch.setattr(watch_mod, "run_iteration", script)
    monkeypatch.setattr(watch_mod, "waiting_labels", lambda store, opts: labels() if callable(labels) else labels)
    monkeypatch.setattr(watch_mod, "drift_verdict", lambda store, model, window: verdict)
    monkeypatch.setattr("visionloop.store.open_store", lambda *a, **k: None)
    events: list = []
    w = Watcher(LoopOptions(data="d", model="m"), WatchOptions(poll=0.01, **kw), on_event=events.append)
    return w, events


def test_a_failed_iteration_is_counted_and_retried_with_backoff(monkeypatch):
    script = _Script(RuntimeError("MLflow is down"), ValueError("odd"), "promote")
    w, events = _watcher(monkeypatch, script, labels=5, min_labels=3, backoff=0.05, max_iterations=3)
    t0 = time.monotonic()
    out = w.run()
    assert [o.status for o in out.outcomes] == ["failed", "failed", "promoted"]
    assert script.calls == 3 and time.monotonic() - t0 >= 0.05 + 0.1  # waited 0.05 then 0.1 (doubled)
    failed = [e.detail for e in events if e.kind == "failed"]
    assert "MLflow is down (failure 1; retry in 0.05 s)" in failed[0] and "failure 2; retry in 0.1 s" in failed[1]
    assert [e.detail for e in events if e.kind == "trigger"][1:] == ["retry after 1 failure(s)", "retry after 2 failure(s)"]
    assert out.outcomes[0].trigger.startswith("5 new labels (>= --min-labels 3)")
    assert out.stopped == "--max-iterations 3 reached"


def test_triggers_labels_drift_schedule(monkeypatch):
    few = _Script()
    w, _ = _watcher(monkeypatch, few, labels=2, min_labels=3, drift=False, max_iterations=1)
    w._stop.set()  # would poll forever: 2 < 3 labels, no drift, no schedule
    assert w.run().outcomes == [] and few.calls == 0

    drifting = _Script("refuse")
    w, _ = _watcher(monkeypatch, drifting, labels=0, verdict="drift", max_iterations=1)
    out = w.run()
    assert out.outcomes[0].trigger == "monitor reports drift for m" and out.outcomes[0].status == "refused"

    scheduled = _Script()
    w, _ = _watcher(monkeypatch, scheduled, labels=0, drift=False, every=0.2, max_iterations=2)
    t0 = time.monotonic()
    out = w.run()
    assert [o.trigger for o in out.outcomes] == ["schedule (every 0.2 s)"] * 2 and time.monotonic() - t0 >= 0.4
    assert out.count("no_change") == 2


def test_a_failing_check_does_not_end_the_watch(monkeypatch):
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("Label Studio is restarting")
        return 1

    w, events = _watcher(monkeypatch, _Script("promote"), labels=flaky, min_labels=1, drift=False, max_iterations=1)
    out = w.run()
    assert out.checks_failed == 2 and out.count("promoted") == 1
    assert sum(e.kind == "check_failed" for e in events) == 2


def test_one_loop_per_model(vl_home, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom visionloop.loop import model_lock\n"
                               "with model_lock('m'):\n    print('locked', flush=True)\n    time.sleep(60)\n"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "VISIONLOOP_HOME": str(vl_home)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConflictError, match=rf"another loop for model 'm' is running \(pid {holder.pid};"):
            with model_lock("m"):
                pass
        with model_lock("other"):  # another model is free
            pass
        r = run_cli("loop", "--data", "d", "--model", "m", "--watch", env={"VISIONLOOP_HOME": str(vl_home)},
                    cwd=tmp_path)
        assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "another loop for model 'm'" in r.stderr
    finally:
        holder.kill()
        holder.wait()
    with model_lock("m"):  # the kernel released it with the process
        pass


def test_sigterm_between_iterations_exits_0(vl_home, tmp_path):
    env = {**os.environ, "VISIONLOOP_HOME": str(vl_home), "LABEL_STUDIO_URL": ""}
    p = subprocess.Popen([*VISIONLOOP, "loop", "--data", "d", "--model", "m", "--watch", "--min-labels", "0",
                          "--no-drift", "--poll", "0.2s"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    line = ""
    while "watch watching" not in line and time.monotonic() < deadline:
        line = p.stderr.readline()
    assert "watch watching" in line
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "watch stopped stop requested" in err and "0 iteration(s)" in out

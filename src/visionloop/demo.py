"""`visionloop demo`: the whole loop on generated data, on CPU, in minutes.

dataset v1 (small) → train → serve (a real server process, watching the champion alias) →
unseen images → low-confidence captures → a labeling round of ``budget`` captures chosen by the
default strategy (feedback.selection) → labels (from the generator's ground truth, standing
in for a human annotator) → dataset v2 → retrain → compare → promote → the server hot-swaps.
Everything lives in its own home, given to this process as a :class:`Settings` and to the
server as its environment: the demo never touches the user's state nor ``os.environ``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from pydantic import BaseModel, Field, PrivateAttr

from .datasets import synthetic
from .datasets.manifest import YoloBox
from .errors import ConflictError, VisionloopError
from .promotion import Comparison, Gate
from .predictions import Task
from .settings import Settings, use_settings

if TYPE_CHECKING:
    import numpy as np

    from .feedback.inbox import CaptureRecord
    from .feedback.rounds import RoundPlan
    from .store import Store
    from .training.events import PipelineEvents

MARKER = ".visionloop-demo"
NAMES = {"detect": "shapes", "classify": "shape-kinds"}  # the dataset's and the model's, per task
ARCH = {"detect": "yolo11n.yaml", "classify": "yolo11n-cls.yaml"}


class DemoOptions(BaseModel):
    home: Path = Path(".visionloop/demo")
    task: Task = "detect"
    imgsz: int = 96  # shapes stay learnable; a CPU epoch takes seconds
    batch: int = 8  # ultralytics warms up for 100 iterations: small batches get past it on little data
    v1_images: int = 120
    v1_epochs: int = 20  # enough that v1 finds some shapes: its captures then carry real scores
    unseen: int = 200
    v2_epochs: int = 15
    budget: int = Field(default=120, description="Captures labeled in the round (picked by the default strategy).")
    conf: float = Field(default=0.05, description="Confidence threshold of the demo's predict requests.")
    capture_low: float = 0.05
    capture_high: float = 0.6
    seed: int = 0
    port: int = 0  # 0: a free port
    keep_serving: bool = Field(default=False, description="Leave the server (and its page at /ui) running at the "
                               "end: the result's ``serving`` owns it.")


    @classmethod
    def for_task(cls, task: Task, **given) -> DemoOptions:
        """The task's defaults (a classifier learns shapes in a few epochs: v1 gets one), then ``given``."""
        return cls(**{**CLASSIFY_DEFAULTS, **given, "task": task} if task == "classify" else {**given, "task": task})


CLASSIFY_DEFAULTS = {"v1_images": 60, "v1_epochs": 1, "v2_epochs": 10, "unseen": 100, "imgsz": 64, "budget": 60}


class DemoResult(BaseModel):
    v1: str
    v2: str
    comparison: Comparison | None
    promoted: bool
    captured: int
    labeled: int = Field(default=0, description="Captures the round picked and labeled.")
    sent: int
    served_before: str
    served_after: str
    seconds: float
    url: str | None = Field(default=None, description="The server still running (keep_serving), e.g. for /ui.")
    _serving: ServerProcess | None = PrivateAttr(default=None)

    @property
    def serving(self) -> ServerProcess | None:
        return self._serving


def _prepare_home(home: Path) -> Path:
    """A fresh demo home; refuses to wipe a directory the demo did not create."""
    home = home.expanduser().resolve()
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise ConflictError(f"{home} is not empty and was not made by the demo; pick another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("made by `visionloop demo`; deleted by the next demo run\n")
    return home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`visionloop serve` as a child process (what a user would run), in its own process group
    so that stopping it stops everything it started."""

    def __init__(self, args: list[str], log_path: Path, port: int = 0, env: dict[str, str] | None = None):
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "visionloop", "serve", "--port", str(self.port), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ) if env is None else env,
                                     start_new_session=True)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VisionloopError(f"the server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if self.http.get("/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise VisionloopError(f"the server was not ready within {timeout:.0f} s; see {self.log_path}")

    def version(self, model: str) -> str | None:
        for m in self.http.get("/v1/models").json()["models"]:
            if m["name"] == model:
                return m.get("version")
        return None

    def wait_version(self, model: str, version: str, timeout: float = 60) -> str | None:
        """Poll until the server answers with ``version`` (a hot swap) or the time is up."""
        deadline = time.monotonic() + timeout
        while (got := self.version(model)) != version and time.monotonic() < deadline:
            time.sleep(0.3)
        return got

    def predict(self, model: str, png: bytes, conf: float) -> dict:
        r = self.http.post(f"/v1/models/{model}/predict", params={"conf": conf},
                           files={"file": ("image.png", png, "image/png")})
        if r.status_code != 200:
            raise VisionloopError(f"predict answered HTTP {r.status_code}: {r.text[:200]}")
        return r.json()

    def wait_until_interrupted(self) -> None:
        """Block until Ctrl-C or SIGTERM (or the server exits by itself), then stop it."""
        def interrupted(signum, frame):
            raise KeyboardInterrupt

        # explicit: a process started with SIGINT ignored (a background job) would otherwise never stop
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, interrupted)
        try:
            self.proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def _wait_captures(store: Store, model: str, timeout: float = 30.0, quiet: float = 2.0) -> int:
    """Captures are written off the request path: wait until the inbox stops growing."""
    from .feedback.inbox import count_captures

    last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = count_captures(store, model)
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.25)
    return max(last, 0)


Truth = list[YoloBox] | int  # the generator's boxes, or its class (classification)


def _send_unseen(server: ServerProcess, opts: DemoOptions, rng: np.random.Generator) -> dict[str, Truth]:
    """Predict ``opts.unseen`` new images; returns their truth by the sha256 of the bytes sent."""
    from .store import sha256_bytes

    truth: dict[str, Truth] = {}
    for _ in range(opts.unseen):
        im, gt = (synthetic.render_classify if opts.task == "classify" else synthetic.render)(rng, size=opts.imgsz)
        png = synthetic.png_bytes(im)
        truth[sha256_bytes(png)] = gt  # the server keeps PNG bytes as sent
        server.predict(NAMES[opts.task], png, opts.conf)
    return truth


def _pick_summary(plan: RoundPlan, shown: int = 5) -> list[str]:
    """The scores of what the round picked: the most and the least uncertain picks, and the spread."""
    import numpy as np

    if not plan.picked:
        return []
    values = np.array([p.scores.value(plan.by) for p in plan.picked])
    boxes = np.array([p.scores.detection_count for p in plan.picked])
    lines = [f"   {plan.by} of the picks: max {values.max():.3f}, median {np.median(values):.3f}, min "
             f"{values.min():.3f}; boxes per image {boxes.min()}-{boxes.max()}, "
             f"{int((boxes == 0).sum())} with none"]
    for p in plan.picked[:shown]:
        s = p.scores
        lines.append(f"   {p.id[:8]}{' (control)' if p.control else ''}: least_confidence {s.least_confidence:.3f} "
                     f"margin {s.margin:.3f} entropy {s.entropy:.3f} boxes {s.detection_count}")
    return lines


def label_from_truth(store: Store, records: list[CaptureRecord], truth: dict[str, Truth]) -> int:
    """Give each capture the generator's boxes or class (in the model's class order), as an
    annotator would: the capture moves to ``labeled``; returns how many."""
    from .feedback.inbox import label_capture, label_capture_class

    labeled = 0
    for r in records:
        gt = truth.get(r.image_sha256)
        if gt is None:
            continue
        names = r.classes or synthetic.CLASSES
        if isinstance(gt, int):
            label_capture_class(store, r, names.index(synthetic.CLASSES[gt]))
        else:
            label_capture(store, r, [b.model_copy(update={"class_id": names.index(synthetic.CLASSES[b.class_id])})
                                     for b in gt])
        labeled += 1
    return labeled


def run_demo(opts: DemoOptions, say: Callable[[str], None], training: PipelineEvents | None = None) -> DemoResult:
    """The whole loop in ``opts.home`` (wiped first); ``say`` hears one line per stage and
    ``training`` the two trainings' progress (default: the ``visionloop.training`` log)."""
    t0 = time.monotonic()
    settings = Settings.isolated(_prepare_home(opts.home))
    with use_settings(settings):
        return _run(opts, settings, say, training, t0)


def _run(opts: DemoOptions, settings: Settings, say: Callable[[str], None], training: PipelineEvents | None,
         t0: float) -> DemoResult:
    from . import loop as loop_mod
    from . import registry
    from .feedback.inbox import list_captures
    from .feedback.rounds import plan_round, record_round
    from .feedback.selection import default_strategy
    from .store import open_store
    from .training.config import build_config
    from .training.pipeline import run_pipeline

    home = settings.resolved_home
    store = open_store(settings.resolved_store_url)
    say(f"home: {home} (its own store, MLflow and caches)")
    dataset = model = NAMES[opts.task]
    classify = opts.task == "classify"

    # 1. dataset v1: a small generated set
    v1_data = synthetic.commit_generated(store, dataset, opts.v1_images, seed=opts.seed, size=opts.imgsz,
                                         task=opts.task)
    say(f"1. dataset {v1_data.ref}: {len(v1_data.images)} generated images {v1_data.split_counts()}")

    # 2. train v1 briefly on little data: it will be unsure, which is what makes captures worth labeling
    cfg = build_config({}, {"data": v1_data.ref, "name": model, "model": ARCH[opts.task], "epochs": opts.v1_epochs,
                            "imgsz": opts.imgsz, "device": "cpu", "batch": opts.batch, "seed": opts.seed})
    v1 = run_pipeline(cfg, training)
    v1_ref = f"{model}/{v1.version}"
    say(f"2. trained {v1_ref} ({opts.v1_epochs} epochs on {v1_data.ref}); it is the champion")

    # 3. serve the champion, following the alias
    kept = False
    low = 0.0 if classify else opts.capture_low  # classification: any top-1 up to HIGH is unsure
    server = ServerProcess(["--model", f"{model}@champion", "--watch", "1", "--capture", "low-confidence",
                            "--capture-range", f"{low},{opts.capture_high}"],
                           home / "server.log", opts.port, env=settings.child_env())
    try:
        server.wait_ready()
        served_before = f"{model}/{server.version(model)}"
        what = (f"a top-1 up to {opts.capture_high} or a top-1/top-2 margin under 0.1" if classify else
                f"confidence {opts.capture_low}-{opts.capture_high} and images with no detection")
        say(f"3. serving {served_before} at {server.url} (watching {model}@champion, capturing {what})")

        # 4. unseen images through the real HTTP API
        import numpy as np

        rng = np.random.default_rng(opts.seed + 1000)
        truth = _send_unseen(server, opts, rng)
        captured = _wait_captures(store, model)
        records = list_captures(store, model, states={"pending"})
        reasons = Counter(r.reason for r in records)
        say(f"4. sent {opts.unseen} unseen images; the server captured {len(records)} "
            f"({', '.join(f'{n} {k}' for k, n in reasons.items()) or 'none'})")

        # 5. a labeling round: the budget goes to the captures the default strategy picks (`label push
        #    --strategy --budget`); a human would label them in Label Studio, the demo knows the
        #    generator's exact boxes and uses them as the annotator's answer.
        # only v1 exists: the default for one model (bench/active_learning.py)
        plan = plan_round(store, records, default_strategy(False), opts.budget, model=model, seed=opts.seed)
        record_round(store, plan)
        say(f"5. picked {len(plan.picked)} of {len(records)} captures by {plan.strategy} (ranked by {plan.by}, "
            f"{sum(p.control for p in plan.picked)} random control, {len(plan.merged)} near-duplicates merged)")
        for line in _pick_summary(plan):
            say(line)
        picked = set(plan.picked_ids)
        labeled = label_from_truth(store, [r for r in records if r.id in picked], truth)
        say(f"   labeled {labeled} captures from the generator's ground truth "
            "(standing in for a human annotator in Label Studio)")

        # 6-9. one turn of the loop: v2 → retrain (longer) → compare → promote → report
        opts_loop = loop_mod.LoopOptions(data=dataset, model=model, train_overrides={"epochs": opts.v2_epochs},
                                         gate=Gate(), report=home / "report.md")
        def step(s: loop_mod.Step) -> None:  # the outcomes only: a stage line each
            if s.status != "started":
                say(f"   {s.name}: {s.detail}")

        res = loop_mod.run_iteration(opts_loop, step, training)
        if res.trained is None:
            raise VisionloopError("the loop trained nothing")
        promoted = res.promoted

        # 10. the watching server swaps to the new champion by itself
        champion = registry.get_alias(model, registry.CHAMPION)
        server.wait_version(model, champion or "")
        render = synthetic.render_classify if classify else synthetic.render
        answer = server.predict(model, synthetic.png_bytes(render(rng, size=opts.imgsz)[0]), opts.conf)
        served_after = f"{model}/{answer['version']}"
        say(f"10. the server now answers with {served_after} (champion {model}/{champion})")
        kept = opts.keep_serving
    finally:
        if not kept:  # an error stops it too
            server.stop()
    cmp = res.promotion.comparison if res.promotion else None
    result = DemoResult(v1=v1_ref, v2=res.trained, comparison=cmp, promoted=promoted, captured=captured, labeled=labeled,
                        sent=opts.unseen, served_before=served_before, served_after=served_after,
                        seconds=time.monotonic() - t0, url=server.url if kept else None)
    result._serving = server if kept else None
    return result


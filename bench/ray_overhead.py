"""What does ``--engine ray`` cost over ``--engine local``? The same `visionloop train` job, both ways.

Each side is a fresh ``visionloop train --force`` process timed from start to exit on the same
generated dataset version and home. ``local`` runs the pipeline in the process; ``ray`` starts
a local Ray (no ``RAY_ADDRESS``: ``ray.init()`` brings up a one-machine cluster), submits the
pipeline as one task with the CPUs asked for, replays its progress and shuts Ray down. Rounds
are interleaved and the medians compared. Goal: ray / local <= 1.15.

Usage: ``.venv/bin/python bench/ray_overhead.py [--epochs 10] [--imgsz 96] [--images 120] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=96)
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    vl = [sys.executable, "-m", "visionloop"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI",
                                                                 "VISIONLOOP_STORE_URL", "VISIONLOOP_TRACKING_URI")}
        env.update(VISIONLOOP_HOME=str(Path(tmp) / "home"), YOLO_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
        run([*vl, "data", "synth", "--name", "shapes", "--images", str(args.images), "--size", str(args.imgsz)], env)
        # the same torch thread count on both sides: Ray gives its task --cpus CPUs
        train = [*vl, "train", "--data", "shapes@1", "--epochs", str(args.epochs), "--imgsz", str(args.imgsz),
                 "--device", "cpu", "--batch", "16", "--threads", str(args.cpus), "--force"]
        times: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(args.rounds):
            times["local"].append(run([*train, "--engine", "local"], env))
            times["ray"].append(run([*train, "--engine", "ray", "--cpus", str(args.cpus)], env))
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"visionloop train, yolo11n.yaml, {args.images} generated images, {args.epochs} epochs at {args.imgsz}, "
          f"{args.cpus} CPU(s), median of {args.rounds}:")
    print("| engine | wall s (each round) | median s |")
    print("|---|---|---:|")
    for k, v in times.items():
        print(f"| {k} | {', '.join(f'{x:.1f}' for x in v)} | {statistics.median(v):.1f} |")
    print(f"ray / local: {ray / local:.2f}x (goal <= 1.15x)")


if __name__ == "__main__":
    main()

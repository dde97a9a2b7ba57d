"""What does `visionloop train` cost over plain ultralytics? Same data, model, epochs, imgsz.

Both sides run as a fresh process, timed from start to exit (imports included), on the same
materialized rock-paper-scissors version:

- baseline: ``YOLO(model).train(data=..., epochs, imgsz, batch, device="cpu")`` with
  ultralytics' MLflow callback switched off (a strict baseline: it does less than a default run);
- visionloop: ``visionloop train --force`` — tracking, per-epoch MLflow metrics, plots and
  weights as artifacts, ONNX export + parity check, evaluation on the test split, registration.

Goal: visionloop / baseline <= 1.10. Run: ``.venv/bin/python bench/train_overhead.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from visionloop.training.config import auto_threads

ROOT = Path(__file__).resolve().parents[1]
RPS = ROOT.parent / "shared" / "datasets" / "rock-paper-scissors"

BASELINE = """
import sys
from ultralytics import YOLO, settings
settings.update({"mlflow": False})
YOLO(sys.argv[1]).train(data=sys.argv[2], epochs=int(sys.argv[3]), imgsz=int(sys.argv[4]), batch=int(sys.argv[5]),
                        device="cpu", workers=0, project=sys.argv[6], name="base", exist_ok=True, verbose=False)
"""


def prepare(home: Path) -> Path:
    """Import RPS into ``home`` and materialize it; returns the data.yaml both sides train on."""
    os.environ["VISIONLOOP_HOME"] = str(home)
    from visionloop.datasets.formats import open_source
    from visionloop.datasets.ingest import ingest
    from visionloop.datasets.materialize import materialize
    from visionloop.settings import get_settings
    from visionloop.store import open_store

    get_settings(fresh=True)
    manifest = ingest(open_store(), open_source(str(RPS)), "rps").commit.manifest
    return materialize(open_store(), manifest, get_settings().cache_dir)


THREAD_PROBE = """
import sys, time, torch
from ultralytics import YOLO
m = YOLO(sys.argv[1]).model.train()
x = torch.rand(int(sys.argv[2]), 3, int(sys.argv[3]), int(sys.argv[3]))
for n in [int(a) for a in sys.argv[4:]]:
    torch.set_num_threads(n)
    t = time.perf_counter()
    for _ in range(2):
        out = m(x)
        outs = out.values() if isinstance(out, dict) else (out if isinstance(out, (list, tuple)) else [out])
        sum(o.float().sum() for o in outs if torch.is_tensor(o)).backward()
    print(n, (time.perf_counter() - t) / 2, flush=True)
"""


def thread_probe(args, env: dict) -> dict[int, float]:
    """Seconds per training step (forward + backward of one batch) with 1 thread vs every core."""
    cores = os.cpu_count() or 1
    order = [1, cores, 1, cores] if cores > 1 else [1, 1]
    res = subprocess.run([sys.executable, "-c", THREAD_PROBE, args.model, str(args.batch), str(args.imgsz),
                          *map(str, order)], env=env, capture_output=True, text=True, check=True)
    best: dict[int, float] = {}
    for line in res.stdout.split("\n"):
        if line.strip():
            n, t = line.split()
            best[int(n)] = min(best.get(int(n), 1e9), float(t))
    return best


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return wall, res.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="yolo11n.yaml")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="Alternating pairs; the median of each side is reported.")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="vl-bench-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        data_yaml = prepare(home)
        env = {**os.environ, "VISIONLOOP_HOME": str(home), "YOLO_CONFIG_DIR": str(tmp / "yolo-config"),
               "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg"}
        env.pop("MLFLOW_TRACKING_URI", None)
        base_cmd = [sys.executable, "-c", BASELINE, args.model, str(data_yaml), str(args.epochs), str(args.imgsz),
                    str(args.batch), str(tmp / "runs")]
        vl_cmd = [sys.executable, "-m", "visionloop", "train", "--data", "rps@1", "--model", args.model,
                  "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
                  "--device", "cpu", "--name", "bench", "--force"]
        base_times, vl_times, steps = [], [], ""
        for i in range(args.repeats):
            b, _ = timed(base_cmd, env)
            v, err = timed(vl_cmd, env)
            base_times.append(b)
            vl_times.append(v)
            steps = " | ".join(f"{n} {t}" for n, t in re.findall(r"✓ (\w[\w ]*): done in ([\d.]+s)", err))
            threads = re.search(r"(\d+) torch threads", err)
            print(f"pair {i + 1}: ultralytics {b:.1f}s, visionloop {v:.1f}s ({v / b:.2f}x; visionloop used "
                  f"{threads.group(1) if threads else '?'} torch threads, ultralytics "
                  f"{max(1, min(8, (os.cpu_count() or 1) - 1))})", flush=True)
        probe = thread_probe(args, env)
        load = os.getloadavg()[0]
    b, v = statistics.median(base_times), statistics.median(vl_times)
    print(f"\ndata: rock-paper-scissors ({args.model}, {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, "
          f"cpu, {os.cpu_count()} cores)")
    print(f"plain ultralytics YOLO().train(): {b:.1f} s")
    print(f"visionloop train (all steps):     {v:.1f} s")
    print(f"ratio: {v / b:.2f}x (goal <= 1.10x)")
    print(f"visionloop steps: {steps}")
    print(f"1-min load average at the end: {load:.1f}; torch threads visionloop would pick now: "
          f"{auto_threads()} (ultralytics: {max(1, min(8, (os.cpu_count() or 1) - 1))})")
    print("one training step (forward+backward, batch {}, imgsz {}): ".format(args.batch, args.imgsz)
          + ", ".join(f"{n} thread(s) {t:.2f}s" for n, t in sorted(probe.items())))


if __name__ == "__main__":
    main()

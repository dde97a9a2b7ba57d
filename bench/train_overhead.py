"""What does `visionloop train` cost over plain ultralytics? Same data, model, epochs, imgsz.

Both sides run as a fresh process, timed from start to exit (imports included), on the same
materialized rock-paper-scissors version:

- baseline: ``YOLO(model).train(data=..., epochs, imgsz, batch, device="cpu")`` with
  ultralytics' MLflow callback switched off (a strict baseline: it does less than a default run);
- visionloop: ``visionloop train --force`` — tracking, per-epoch MLflow metrics, plots and
  weights as artifacts, ONNX export + parity check, evaluation on the test split, registration.

Goal: visionloop / baseline <= 1.10. Run: ``.venv/bin/python bench/train_overhead.py``.

``--task classify``: the same comparison with ``yolo11n-cls.yaml`` on the rock-paper-scissors
crops (one crop per box, tests/classify_fixtures.py) imported as a classify version; plain
ultralytics trains on the materialized class folders. Also reported: the test top-1 of both on
the same test images (plain: ``YOLO(best.pt).val(split="test")``, untimed; visionloop: its
evaluation through the served ONNX path). Goal: visionloop's top-1 >= 0.95x plain's.

``--task classify --transfer``: pretrain on generated classify shapes, then fine-tune that
``.pt`` onto the RPS crops (3 new classes: a new head) against the same recipe from scratch,
same epochs and seed; both test top-1 numbers.
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


CLS_VAL = """
import sys
from ultralytics import YOLO
m = YOLO(sys.argv[1]).val(data=sys.argv[2], split="test", imgsz=int(sys.argv[3]), batch=int(sys.argv[4]),
                          device="cpu", workers=0, plots=False, verbose=False, project=sys.argv[5], name="val")
print("TOP1", m.top1)
"""
TOP1 = re.compile(r"\| top-1 \| ([\d.]+) \|")


def prepare(home: Path, task: str = "detect", tmp: Path | None = None, limit: int | None = None) -> Path:
    """Import RPS (classify: its box crops) into ``home`` and materialize it; returns the data.yaml
    both sides train on (classify: ultralytics is given its folder)."""
    os.environ["VISIONLOOP_HOME"] = str(home)
    from visionloop.datasets.formats import open_source
    from visionloop.datasets.ingest import ingest
    from visionloop.datasets.materialize import materialize
    from visionloop.settings import get_settings
    from visionloop.store import open_store

    get_settings(fresh=True)
    if task == "classify":
        sys.path.insert(0, str(ROOT / "tests"))
        from classify_fixtures import import_rps_crops

        manifest = import_rps_crops(open_store(), "rps", tmp / "crops", limit)
    else:
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
        if re.fullmatch(r"\d+ [\d.e-]+", line.strip()):  # skip what the model prints about itself
            n, t = line.split()
            best[int(n)] = min(best.get(int(n), 1e9), float(t))
    return best


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return wall, res.stdout + res.stderr


def bench_env(tmp: Path, home: Path) -> dict:
    env = {**os.environ, "VISIONLOOP_HOME": str(home), "YOLO_CONFIG_DIR": str(tmp / "yolo-config"),
           "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def vl_train(env: dict, data: str, model: str, epochs: int, imgsz: int, batch: int, name: str,
             extra: tuple[str, ...] = ()) -> tuple[float, str]:
    """``visionloop train --force`` (plus ``extra`` options): wall seconds and its stdout (the summary)."""
    cmd = [sys.executable, "-m", "visionloop", "train", "--data", data, "--model", model, "--epochs", str(epochs),
           "--imgsz", str(imgsz), "--batch", str(batch), "--device", "cpu", "--name", name, "--force", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0, res.stdout + res.stderr


def top1_of(output: str) -> float:
    found = TOP1.search(output)
    if not found:
        sys.exit(f"no top-1 in the training summary:\n{output[-2000:]}")
    return float(found.group(1))


def transfer(args) -> None:
    """Pretrain on generated shapes; fine-tune onto RPS crops vs from scratch (same recipe)."""
    with tempfile.TemporaryDirectory(prefix="vl-bench-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        prepare(home, "classify", tmp, args.limit)
        from visionloop.datasets import synthetic
        from visionloop.store import open_store

        synthetic.commit_generated(open_store(), "shapes", args.pretrain_images, seed=args.seed, size=96,
                                   task="classify")
        env = bench_env(tmp, home)
        _, out = vl_train(env, "shapes@1", args.model, args.pretrain_epochs, args.imgsz, args.batch, "pre")
        pre_top1 = top1_of(out)
        weights = re.search(r"\| weights \| `([^`]+)` \|", out).group(1)
        ft_s, ft = vl_train(env, "rps@1", weights, args.epochs, args.imgsz, args.batch, "finetuned")
        sc_s, sc = vl_train(env, "rps@1", args.model, args.epochs, args.imgsz, args.batch, "scratch")
        moved = re.search(r"transferred \d+/\d+ tensors[^\n]*", ft)
    print(f"pretrain: {args.model} on {args.pretrain_images} generated shapes, {args.pretrain_epochs} epochs: "
          f"test top-1 {pre_top1:.4f}")
    print(f"fine-tune onto RPS crops: {moved.group(0) if moved else '?'}")
    print(f"RPS crops, {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, seed 0:")
    print(f"  from the shapes .pt: test top-1 {top1_of(ft):.4f} ({ft_s:.0f} s)")
    print(f"  from scratch:        test top-1 {top1_of(sc):.4f} ({sc_s:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=("detect", "classify"), default="detect")
    ap.add_argument("--model", default=None, help="Default: yolo11n.yaml (detect), yolo11n-cls.yaml (classify).")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=None, help="Default: 320 (detect), 64 (classify).")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="Alternating pairs; the median of each side is reported.")
    ap.add_argument("--threads", type=int, default=None,
                    help="visionloop's --threads (default: its automatic pick); e.g. 1 = ultralytics' pick on 2 cores.")
    ap.add_argument("--limit", type=int, default=None, help="classify: at most this many crops per split.")
    ap.add_argument("--transfer", action="store_true", help="classify: the transfer-learning measurement.")
    ap.add_argument("--seed", type=int, default=0, help="--transfer: seed of the generated shapes.")
    ap.add_argument("--pretrain-images", type=int, default=300)
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    args = ap.parse_args()
    classify = args.task == "classify"
    args.model = args.model or ("yolo11n-cls.yaml" if classify else "yolo11n.yaml")
    args.imgsz = args.imgsz or (64 if classify else 320)
    if args.transfer:
        if not classify:
            sys.exit("--transfer needs --task classify")
        return transfer(args)

    with tempfile.TemporaryDirectory(prefix="vl-bench-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        data_yaml = prepare(home, args.task, tmp, args.limit)
        data = data_yaml.parent if classify else data_yaml  # ultralytics' classify trainer reads folders
        env = bench_env(tmp, home)
        base_cmd = [sys.executable, "-c", BASELINE, args.model, str(data), str(args.epochs), str(args.imgsz),
                    str(args.batch), str(tmp / "runs")]
        vl_cmd = [sys.executable, "-m", "visionloop", "train", "--data", "rps@1", "--model", args.model,
                  "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
                  "--device", "cpu", "--name", "bench", "--force",
                  *(["--threads", str(args.threads)] if args.threads is not None else [])]
        base_times, vl_times, steps, vl_out = [], [], "", ""
        for i in range(args.repeats):
            b, _ = timed(base_cmd, env)
            v, err = timed(vl_cmd, env)
            vl_out = err
            base_times.append(b)
            vl_times.append(v)
            steps = " | ".join(f"{n} {t}" for n, t in re.findall(r"✓ (\w[\w ]*): done in ([\d.]+s)", err))
            threads = re.search(r"(\d+) torch threads", err)
            print(f"pair {i + 1}: ultralytics {b:.1f}s, visionloop {v:.1f}s ({v / b:.2f}x; visionloop used "
                  f"{threads.group(1) if threads else '?'} torch threads, ultralytics "
                  f"{max(1, min(8, (os.cpu_count() or 1) - 1))})", flush=True)
        probe = thread_probe(args, env)
        load = os.getloadavg()[0]
        accuracy = ""
        if classify:  # the test top-1 of both, on the same test images (untimed)
            val = subprocess.run([sys.executable, "-c", CLS_VAL, str(tmp / "runs" / "base" / "weights" / "best.pt"),
                                  str(data), str(args.imgsz), str(args.batch), str(tmp / "val")],
                                 env=env, capture_output=True, text=True, check=True)
            plain = float(re.search(r"TOP1 ([\d.]+)", val.stdout).group(1))
            ours = top1_of(vl_out)
            accuracy = (f"test top-1: plain ultralytics {plain:.4f} (its validator), visionloop {ours:.4f} "
                        f"(served ONNX path): {ours / plain if plain else float('nan'):.2f}x (goal >= 0.95x)")
    b, v = statistics.median(base_times), statistics.median(vl_times)
    data_name = "rock-paper-scissors crops" if classify else "rock-paper-scissors"
    print(f"\ndata: {data_name} ({args.model}, {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, "
          f"cpu, {os.cpu_count()} cores)")
    print(f"plain ultralytics YOLO().train(): {b:.1f} s")
    print(f"visionloop train (all steps):     {v:.1f} s")
    print(f"ratio: {v / b:.2f}x (goal <= 1.10x)")
    if accuracy:
        print(accuracy)
    print(f"visionloop steps: {steps}")
    print(f"1-min load average at the end: {load:.1f}; torch threads visionloop would pick now: "
          f"{auto_threads()} (ultralytics: {max(1, min(8, (os.cpu_count() or 1) - 1))})")
    print("one training step (forward+backward, batch {}, imgsz {}): ".format(args.batch, args.imgsz)
          + ", ".join(f"{n} thread(s) {t:.2f}s" for n, t in sorted(probe.items())))


if __name__ == "__main__":
    main()

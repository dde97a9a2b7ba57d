"""Import throughput of the rock-paper-scissors data.yaml against a read-and-decode baseline.

Baseline: read every image file and decode it once with Pillow (the least any importer that
checks its images must do). Import: the real ``data import`` path (data.yaml parsing, label
checks, decode, sha256, blob writes, manifest) into a fresh temporary store each round. Both
run in this script on the same files, warm page cache, interleaved, best of ``--rounds``.
Goal: ratio ≤ 1.5.

    .venv/bin/python bench/import_bench.py [--data PATH/data.yaml] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from visionloop.datasets.formats import open_source
from visionloop.datasets.formats.tree import is_image_name
from visionloop.datasets.ingest import ingest
from visionloop.store import Store

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "rock-paper-scissors" / "data.yaml"


def baseline(files: list[Path]) -> int:
    for f in files:
        Image.open(io.BytesIO(f.read_bytes())).load()
    return len(files)


def timed_baseline(files: list[Path]) -> tuple[float, float, int]:
    t, c = time.perf_counter(), time.process_time()
    n = baseline(files)
    return time.perf_counter() - t, time.process_time() - c, n


def timed_import(data_yaml: Path) -> tuple[float, float, int]:
    """Only the import is timed, not making or deleting the temporary store."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(str(Path(tmp) / "store"))
        t, c = time.perf_counter(), time.process_time()
        res = ingest(store, open_source(str(data_yaml)), "bench")
        return time.perf_counter() - t, time.process_time() - c, len(res.commit.manifest.images)


def best(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    """Best wall time and best CPU time (all threads) over the rounds."""
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[-1][2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--full-decode", action="store_true",
                    help="Also time the import with JPEG draft (reduced-scale check decode) disabled.")
    args = ap.parse_args()
    files = sorted(p for p in args.data.parent.rglob("*") if p.is_file() and is_image_name(p.name)
                   and "images" in p.parts)
    baseline(files)  # warm the page cache for both sides
    # interleaved rounds, best of each: a shared machine's load drifts between rounds
    base_runs, imp_runs = [], []
    for _ in range(args.rounds):
        base_runs.append(timed_baseline(files))
        imp_runs.append(timed_import(args.data))
    t_base, c_base, n_base = best(base_runs)
    t_imp, c_imp, n_imp = best(imp_runs)
    if n_imp != n_base:
        print(f"imported {n_imp} images but the baseline decoded {n_base}", file=sys.stderr)
        return 1
    ratio = t_imp / t_base
    print(f"images: {n_base}  (best of {args.rounds} rounds)")
    print(f"baseline read+decode: {n_base / t_base:8.1f} images/s  ({t_base:.3f} s wall, {c_base:.3f} s CPU)")
    print(f"data import:          {n_imp / t_imp:8.1f} images/s  ({t_imp:.3f} s wall, {c_imp:.3f} s CPU)")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
          f"(a busy machine makes the wall-time ratio noisy)")
    print(f"import time / baseline time: {ratio:.2f}x  (goal <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})")
    if args.full_decode:  # what the import costs when every JPEG is decoded at full scale
        from PIL import JpegImagePlugin

        JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None
        t_full, _, _ = best([timed_import(args.data) for _ in range(args.rounds)])
        print(f"data import, full-scale decode: {n_imp / t_full:8.1f} images/s  ({t_full:.3f} s, "
              f"{t_full / t_base:.2f}x baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

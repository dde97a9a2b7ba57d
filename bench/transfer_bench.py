"""Does pretraining on generated shapes help `visionloop train` on the RPS crops? Transfer vs scratch.

Protocol (fixed before any result was seen; change it only with a new RESULTS entry):

- Target: every rock-paper-scissors box crop (tests/classify_fixtures.py), the source's
  train/valid/test pooled into ONE folder of class folders, so the hash split (70/15/15, seed 0)
  gives a test split of ~50 crops instead of the source's 13. The same version for both recipes.
- Pretraining set: ``--pretrain-images`` generated classify shapes (datasets.synthetic.generate),
  each with its RGB channels put in a random order: the generator colour-codes the classes, and a
  backbone that learns "red = circle" has nothing to carry over to hands; with the colour scrambled
  the shape is what tells the classes apart. ``yolo11n-cls.yaml`` trained on it at the fine-tuning
  imgsz.
- Fine-tuning: ``visionloop train --model <shapes best.pt>`` vs ``--model yolo11n-cls.yaml`` with
  the same epochs, imgsz, batch, ``--threads`` and ``--seed``, for each of ``--seeds``; the test
  top-1 of each (visionloop's evaluation, served ONNX path), per seed and mean.

Run: ``.venv/bin/python bench/transfer_bench.py`` (defaults: the recorded run).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_overhead import ROOT, bench_env, top1_of, vl_train  # noqa: E402


def pooled_rps(dest: Path) -> Path:
    """All RPS crops as ``dest/pool/<class>/*.jpg`` (split name prefixed: file names stay unique)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from classify_fixtures import rps_crops

    split_tree = rps_crops(dest / "splits")
    for f in split_tree.glob("*/*/*.jpg"):
        out = dest / "pool" / f.parent.name / f"{f.parent.parent.name}_{f.name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), out)
    return dest / "pool"


def scrambled_shapes(dest: Path, n: int, seed: int, size: int) -> Path:
    """``n`` generated classify shapes, RGB channels in a random order per image, as class folders."""
    from visionloop.datasets.synthetic import CLASSES, generate

    rng = np.random.default_rng(seed + 1000)
    for s in generate(n, seed=seed, size=size, task="classify"):
        with Image.open(io.BytesIO(s.data)) as im:
            px = np.asarray(im.convert("RGB"))[:, :, rng.permutation(3)]
        out = dest / CLASSES[s.class_id] / s.name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(px).save(out)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain-images", type=int, default=1500)
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=20, help="Fine-tuning epochs (both recipes).")
    ap.add_argument("--imgsz", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="Fixed, so no run depends on the load of the moment.")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    fixed = ("--threads", str(args.threads))
    with tempfile.TemporaryDirectory(prefix="vl-transfer-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        os.environ["VISIONLOOP_HOME"] = str(home)
        from visionloop.datasets.formats import open_source
        from visionloop.datasets.ingest import ingest
        from visionloop.settings import get_settings
        from visionloop.store import open_store

        get_settings(fresh=True)
        rps = ingest(open_store(), open_source(str(pooled_rps(tmp / "rps"))), "rps").commit.manifest
        ingest(open_store(), open_source(str(scrambled_shapes(tmp / "shapes", args.pretrain_images, 0, 128))),
               "shapes")
        counts = {s: len(rps.by_split(s)) for s in ("train", "val", "test")}
        test_cls = {c: sum(1 for i in rps.by_split("test") if i.class_id == k) for k, c in enumerate(rps.classes)}
        print(f"RPS crops pooled, hash split: {counts}; test per class {test_cls}", flush=True)
        env = bench_env(tmp, home)
        pre_s, out = vl_train(env, "shapes@1", "yolo11n-cls.yaml", args.pretrain_epochs, args.imgsz, args.batch,
                              "pre", (*fixed, "--seed", "0"))
        weights = re.search(r"\| weights \| `([^`]+)` \|", out).group(1)
        print(f"pretrain: {args.pretrain_images} scrambled-colour shapes, {args.pretrain_epochs} epochs, imgsz "
              f"{args.imgsz}: test top-1 {top1_of(out):.4f} ({pre_s:.0f} s)", flush=True)
        rows = []
        for seed in args.seeds:
            recipe = (*fixed, "--seed", str(seed))
            ft_s, ft = vl_train(env, "rps@1", weights, args.epochs, args.imgsz, args.batch, f"ft{seed}", recipe)
            sc_s, sc = vl_train(env, "rps@1", "yolo11n-cls.yaml", args.epochs, args.imgsz, args.batch,
                                f"sc{seed}", recipe)
            moved = re.search(r"transferred \d+/\d+ tensors[^\n]*", ft)
            rows.append((seed, top1_of(ft), top1_of(sc)))
            print(f"seed {seed}: from shapes .pt {rows[-1][1]:.4f} ({ft_s:.0f} s), from scratch {rows[-1][2]:.4f} "
                  f"({sc_s:.0f} s)  [{moved.group(0) if moved else '?'}]", flush=True)
    ft_mean, sc_mean = statistics.mean(r[1] for r in rows), statistics.mean(r[2] for r in rows)
    wins = sum(r[1] > r[2] for r in rows)
    print(f"\nRPS test top-1 after {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, {args.threads} threads, "
          f"{counts['test']} test crops:")
    print(f"  mean: from shapes .pt {ft_mean:.4f}, from scratch {sc_mean:.4f}; transfer higher in {wins}/{len(rows)} seeds")


if __name__ == "__main__":
    main()
